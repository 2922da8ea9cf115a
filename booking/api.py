"""gRPC entry point of the booking service: proto in, use case, proto out."""

from __future__ import annotations

import grpc
from google.api import httpbody_pb2

from booking.convert import booking_to_proto
from booking.domain import State
from booking.gateways import Card
from booking.service import BookingUseCases
from booking.tickets import TicketUseCases
from runtime import timestamps
from runtime.errors import bad_field
from runtime.identity import caller
from ticketing.auth.v1 import auth_pb2
from ticketing.booking.v1 import booking_pb2, booking_pb2_grpc


class BookingServicer(booking_pb2_grpc.BookingServiceServicer):
    def __init__(self, use_cases: BookingUseCases, tickets: TicketUseCases) -> None:
        self._bookings = use_cases
        self._tickets = tickets

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
            request.hold_id,
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

    async def ListTickets(
        self, request: booking_pb2.ListTicketsRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.ListTicketsResponse:
        tokens = await self._tickets.tickets(caller(), request.booking_id)
        return booking_pb2.ListTicketsResponse(
            tickets=[
                booking_pb2.Ticket(seat_id=seat, ticket_token=token)
                for seat, token in tokens.items()
            ]
        )

    async def GetTicketsPdf(
        self, request: booking_pb2.GetTicketsPdfRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        pdf = await self._tickets.pdf(caller(), request.booking_id)
        return httpbody_pb2.HttpBody(content_type="application/pdf", data=pdf)

    async def CheckIn(
        self, request: booking_pb2.CheckInRequest, context: grpc.aio.ServicerContext
    ) -> booking_pb2.TicketCheckIn:
        admitted = await self._tickets.check_in(caller(), request.ticket_token, request.event_id)
        return booking_pb2.TicketCheckIn(
            seat_id=admitted.seat_id,
            booking_id=str(admitted.booking_id),
            event_id=str(admitted.event_id),
            check_in_time=timestamps.to_proto(admitted.check_in_time),
        )

    async def GetTicketKeys(
        self, request: booking_pb2.GetTicketKeysRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.JwkSet:
        return auth_pb2.JwkSet(keys=[auth_pb2.Jwk(**key) for key in self._tickets.public_keys()])
