"""The saga's gateways over gRPC: the event and payment services' stubs, each
call with the retry policy's deadline and the request id, protobuf in and out
here and nowhere else in the saga. Failed calls become the error kinds of
`runtime.errors` by the one table of `runtime.status`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import grpc

from booking import convert
from booking.domain import EventSnapshot
from booking.gateways import Card, HeldSeat, Hold, Payment, PaymentState
from runtime import status, timestamps, tls
from runtime.errors import NotFound
from runtime.identity import current_caller
from runtime.logs import request_id_var
from ticketing.event.v1 import event_pb2, event_pb2_grpc
from ticketing.payment.v1 import payment_pb2, payment_pb2_grpc


class Downstream:
    """One channel per peer for the life of the process: a sale reuses its
    connections (and their TLS sessions) instead of handshaking per call."""

    def __init__(
        self,
        event_target: str,
        payment_target: str,
        timeout_seconds: float,
        identity: tls.TlsFiles,
    ) -> None:
        self._channels = [
            tls.aio_channel(event_target, "event", identity),
            tls.aio_channel(payment_target, "payment", identity),
        ]
        self.seats = GrpcSeatHolds(
            event_pb2_grpc.EventServiceStub(self._channels[0]), timeout_seconds
        )
        self.payments = GrpcPayments(
            payment_pb2_grpc.PaymentServiceStub(self._channels[1]), timeout_seconds
        )
        self.organizers = GrpcOrganizers(
            event_pb2_grpc.EventServiceStub(self._channels[0]), timeout_seconds
        )

    async def aclose(self) -> None:
        for channel in self._channels:
            await channel.close()


class _Gateway:
    def __init__(self, timeout_seconds: float) -> None:
        self._timeout = timeout_seconds

    def _options(self) -> dict[str, object]:
        """Each call's deadline, and the request id passed on for the logs."""
        return {"timeout": self._timeout, "metadata": (("x-request-id", request_id_var.get()),)}


def _hold(held: event_pb2.LockSeatResponse) -> Hold:
    return Hold(
        owner_token=held.owner_token,
        fencing_token=held.fencing_token,
        expire_time=timestamps.from_proto(held.expire_time),
        seats=tuple(
            HeldSeat(s.seat_id, s.tier, s.price.amount_minor, s.price.currency_code)
            for s in held.seats
        ),
        event=EventSnapshot(
            uuid.UUID(held.event.event_id),
            held.event.title,
            held.event.venue,
            timestamps.from_proto(held.event.starts_at),
        ),
    )


class GrpcSeatHolds(_Gateway):
    def __init__(self, stub: event_pb2_grpc.EventServiceStub, timeout_seconds: float) -> None:
        super().__init__(timeout_seconds)
        self._stub = stub

    async def hold(
        self, event_id: str, seat_ids: Sequence[str], owner: str, ttl_seconds: int
    ) -> Hold:
        # The buyer whose request this is (none in the sweep): the seats count
        # towards their max_tickets_per_user.
        buyer = current_caller.get()
        try:
            held = await self._stub.LockSeat(
                event_pb2.LockSeatRequest(
                    event_id=event_id,
                    seat_ids=seat_ids,
                    owner=owner,
                    ttl_seconds=ttl_seconds,
                    user_id=buyer.user_id if buyer else "",
                ),
                **self._options(),
            )
        except grpc.aio.AioRpcError as error:
            raise status.service_error(error) from error
        return _hold(held)

    async def claim(self, hold_id: str, user_id: uuid.UUID, booking_id: uuid.UUID) -> Hold:
        try:
            held = await self._stub.ClaimHold(
                event_pb2.ClaimHoldRequest(
                    hold_id=hold_id, user_id=str(user_id), booking_id=str(booking_id)
                ),
                **self._options(),
            )
        except grpc.aio.AioRpcError as error:
            raise status.service_error(error) from error
        return _hold(held)

    async def release(self, event_id: str, seat_ids: Sequence[str], owner_token: str) -> None:
        try:
            await self._stub.ReleaseSeat(
                event_pb2.ReleaseSeatRequest(
                    event_id=event_id, seat_ids=seat_ids, owner_token=owner_token
                ),
                **self._options(),
            )
        except grpc.aio.AioRpcError as error:
            raise status.service_error(error) from error

    async def confirm(
        self,
        event_id: str,
        seat_ids: Sequence[str],
        owner_token: str,
        fencing_token: int,
        booking_id: uuid.UUID,
    ) -> None:
        try:
            await self._stub.ConfirmSeats(
                event_pb2.ConfirmSeatsRequest(
                    event_id=event_id,
                    seat_ids=seat_ids,
                    owner_token=owner_token,
                    fencing_token=fencing_token,
                    booking_id=str(booking_id),
                ),
                **self._options(),
            )
        except grpc.aio.AioRpcError as error:
            raise status.service_error(error) from error

    async def return_seats(self, event_id: str, booking_id: uuid.UUID) -> None:
        try:
            await self._stub.ReturnSeats(
                event_pb2.ReturnSeatsRequest(event_id=event_id, booking_id=str(booking_id)),
                **self._options(),
            )
        except grpc.aio.AioRpcError as error:
            raise status.service_error(error) from error


class GrpcOrganizers(_Gateway):
    """Event organizers by event, from GetEvent; an event's organizer never
    changes, so each is asked once per process."""

    def __init__(self, stub: event_pb2_grpc.EventServiceStub, timeout_seconds: float) -> None:
        super().__init__(timeout_seconds)
        self._stub = stub
        self._known: dict[uuid.UUID, uuid.UUID] = {}

    async def organizer_of(self, event_id: uuid.UUID) -> uuid.UUID:
        known = self._known.get(event_id)
        if known is None:
            try:
                event = await self._stub.GetEvent(
                    event_pb2.GetEventRequest(event_id=str(event_id)), **self._options()
                )
            except grpc.aio.AioRpcError as error:
                raise status.service_error(error) from error
            if len(self._known) > 10_000:
                self._known.clear()
            known = self._known[event_id] = uuid.UUID(event.organizer_id)
        return known


def _payment(reply: payment_pb2.Payment) -> Payment:
    return Payment(
        uuid.UUID(reply.payment_id),
        PaymentState(reply.state),
        reply.decline_code,
        reply.refunded_amount.amount_minor,
    )


class GrpcPayments(_Gateway):
    def __init__(self, stub: payment_pb2_grpc.PaymentServiceStub, timeout_seconds: float) -> None:
        super().__init__(timeout_seconds)
        self._stub = stub

    async def charge(
        self,
        idempotency_key: str,
        user_id: uuid.UUID,
        amount_minor: int,
        currency: str,
        card: Card,
        reference: str,
    ) -> Payment:
        request = payment_pb2.ChargeRequest(
            idempotency_key=idempotency_key,
            user_id=str(user_id),
            amount=convert.money(amount_minor, currency),
            payment_method=payment_pb2.PaymentMethod(
                card_number=card.number,
                exp_month=card.exp_month,
                exp_year=card.exp_year,
                cvc=card.cvc,
            ),
            reference=reference,
        )
        try:
            return _payment(await self._stub.Charge(request, **self._options()))
        except grpc.aio.AioRpcError as error:
            raise status.service_error(error) from error

    async def refund(self, payment_id: uuid.UUID, idempotency_key: str) -> Payment:
        try:
            reply = await self._stub.Refund(
                payment_pb2.RefundRequest(
                    idempotency_key=idempotency_key, payment_id=str(payment_id)
                ),
                **self._options(),
            )
        except grpc.aio.AioRpcError as error:
            raise status.service_error(error) from error
        return _payment(reply)

    async def look_up(self, idempotency_key: str) -> Payment | None:
        try:
            reply = await self._stub.LookupPayment(
                payment_pb2.LookupPaymentRequest(idempotency_key=idempotency_key),
                **self._options(),
            )
        except grpc.aio.AioRpcError as error:
            found = status.service_error(error)
            if isinstance(found, NotFound):
                return None
            raise found from error
        return _payment(reply)
