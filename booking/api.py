"""gRPC entry point of the booking service: proto in, use case, proto out."""

from __future__ import annotations

import grpc

from booking.convert import booking_to_proto
from booking.domain import State
from booking.gateways import Card
from booking.service import BookingUseCases
from runtime.errors import bad_field
from runtime.identity import caller
from ticketing.booking.v1 import booking_pb2, booking_pb2_grpc


class BookingServicer(booking_pb2_grpc.BookingServiceServicer):
    def __init__(self, use_cases: BookingUseCases) -> None:
        self._bookings = use_cases

    async def CreateBooking(
        self, request: booking_pb2.CreateBookingRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.Booking:
        method = request.payment_method
        booking = await self._bookings.create(
            caller(),
            request.event_id,
            list(request.seat_ids),
            Card(method.card_number, method.exp_month, method.exp_year, method.cvc)
            if request.HasField("payment_method")
            else None,
            request.request_id,
        )
        return booking_to_proto(booking)

    async def GetBooking(
        self, request: booking_pb2.GetBookingRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.Booking:
        return booking_to_proto(await self._bookings.get(caller(), request.booking_id))

    async def ListBookings(
        self, request: booking_pb2.ListBookingsRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.ListBookingsResponse:
        state = None
        if request.state != booking_pb2.BOOKING_STATE_UNSPECIFIED:
            try:
                state = State(request.state)
            except ValueError as exc:
                raise bad_field("state", "is not a known booking state") from exc
        bookings, token = await self._bookings.list(
            caller(), request.page_size, request.page_token, state
        )
        return booking_pb2.ListBookingsResponse(
            bookings=[booking_to_proto(b) for b in bookings], next_page_token=token
        )

    async def CancelBooking(
        self, request: booking_pb2.CancelBookingRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.Booking:
        return booking_to_proto(await self._bookings.cancel(caller(), request.booking_id))
