"""Booking use cases: the synchronous saga and the sweep that settles what it
could not.

CreateBooking: hold the seats (LockSeat) -> record PENDING -> Charge (the
booking id is the idempotency key) -> ConfirmSeats -> CONFIRMED, with the
BookingConfirmed message in the same transaction. A decline releases the
seats and fails the booking. When a step's outcome is unknown (a service
timed out or died) the booking stays PENDING and the sweep settles it once
its hold has lapsed, from what the payment service says happened: money
taken means the seats are sold (re-held if they are still free) or the money
goes back; no money means the seats go back. So no seat stays held past the
TTL, no money is kept without a ticket, and no ticket exists without money.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import grpc
from prometheus_client import Counter

from booking import convert, domain
from booking.clients import RETRYABLE, Downstream
from booking.domain import BookedSeat, Booking, EventSnapshot, State
from booking.repository import Ledger
from runtime import pagination, timestamps
from runtime.errors import (
    ErrorDetails,
    ServiceError,
    bad_field,
    error_details,
    not_found,
    parse_uuid,
)
from runtime.identity import Caller
from runtime.outbox import OutboxMessage
from runtime.tasks import periodically
from ticketing.event.v1 import event_pb2
from ticketing.payment.v1 import payment_pb2

log = logging.getLogger(__name__)

BOOKING_OUTCOMES = Counter(
    "booking_outcomes_total",
    "Bookings settled, by outcome: confirmed, failed, cancelled, seats_unavailable, pending.",
    ["outcome"],
)

CHARGE_ATTEMPTS = 3


class Unsettled(Exception):
    """A saga step's outcome is unknown for now; the sweep will settle it."""


def relay(details: ErrorDetails) -> ServiceError:
    """A downstream refusal passed on to our caller as it was."""
    return ServiceError(
        details.code,
        details.reason or details.code.name,
        details.message,
        details.metadata,
        details.violations,
    )


def pending_error(booking_id: uuid.UUID, what: str) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.UNAVAILABLE,
        "BOOKING_PENDING",
        f"{what}; the booking stays PENDING and settles on its own within minutes "
        "(retry with the same request_id, or GET it)",
        {"booking_id": str(booking_id)},
    )


def settled(booking: Booking, state: State, **changes: object) -> Booking:
    """The booking as it is once moved to `state` now."""
    return dataclasses.replace(booking, state=state, update_time=datetime.now(UTC), **changes)


class BookingUseCases:
    def __init__(
        self,
        ledger: Ledger,
        downstream: Downstream,
        hold_ttl_seconds: int,
        sweep_grace_seconds: float,
    ) -> None:
        self._ledger = ledger
        self._down = downstream
        self._hold_ttl_seconds = hold_ttl_seconds
        # The sweep only touches a booking whose saga cannot still be running and
        # whose hold has lapsed, so it never races a live request.
        self._settle_after_seconds = (
            max(hold_ttl_seconds, self.saga_budget_seconds) + sweep_grace_seconds
        )

    @property
    def saga_budget_seconds(self) -> float:
        """The longest a CreateBooking can run: every call's deadline and backoff."""
        calls = CHARGE_ATTEMPTS + 4  # lock, charge attempts, confirm, re-lock, confirm
        return self._down.timeout * calls + 0.2 * 2**CHARGE_ATTEMPTS

    # -- the saga -------------------------------------------------------------

    async def create(
        self,
        who: Caller,
        event_id: str,
        seat_ids: Sequence[str],
        payment_method: payment_pb2.PaymentMethod | None,
        request_id: str,
    ) -> Booking:
        domain.check_request(event_id, seat_ids, payment_method is not None, request_id)
        booking_id = domain.booking_id_for(who.user_id, request_id)
        existing = await self._ledger.get(booking_id)
        if existing is not None:
            return await self._replay(existing, event_id)

        try:
            held = await self._lock(event_id, seat_ids, booking_id)
        except ServiceError:
            # A concurrent retry of this request may have sold the seats to this
            # very booking between the ledger check above and the hold.
            existing = await self._ledger.get(booking_id)
            if existing is None:
                raise
            return await self._replay(existing, event_id)
        now = datetime.now(UTC)
        seats = tuple(BookedSeat(s.seat_id, s.tier, s.price.amount_minor) for s in held.seats)
        booking = Booking(
            booking_id=booking_id,
            user_id=uuid.UUID(who.user_id),
            user_email=who.email,
            request_id=request_id or str(booking_id),
            event=EventSnapshot(
                uuid.UUID(held.event.event_id),
                held.event.title,
                held.event.venue,
                timestamps.from_proto(held.event.starts_at),
            ),
            seats=seats,
            currency=held.seats[0].price.currency_code,
            total_minor=domain.total(seats),
            state=State.PENDING,
            owner_token=held.owner_token,
            fencing_token=held.fencing_token,
            create_time=now,
            update_time=now,
        )
        if booking.total_minor > domain.MAX_TOTAL_MINOR:
            await self._release(booking)
            raise bad_field("seat_ids", "these seats cost more than one booking can charge")
        if not await self._ledger.add(booking):
            # A concurrent retry of the same request got there first.
            return await self._replay(await self._get(booking_id), event_id)

        assert payment_method is not None
        try:
            payment = await self._charge(booking, payment_method)
        except ServiceError:
            # Bad card data: nothing was charged, so leave no trace of the attempt.
            await self._release(booking)
            await self._ledger.delete_pending(booking_id)
            raise
        except Unsettled as exc:
            BOOKING_OUTCOMES.labels("pending").inc()
            raise pending_error(booking_id, "the payment's outcome is not known yet") from exc
        try:
            settled = await self._settle_charge(booking, payment, reacquire=False)
        except Unsettled as exc:
            BOOKING_OUTCOMES.labels("pending").inc()
            raise pending_error(booking_id, "the seats could not be confirmed yet") from exc
        if settled.state is State.FAILED:
            raise domain.failure_error(settled)
        return settled

    async def _replay(self, existing: Booking, event_id: str) -> Booking:
        """Answers a retried request with the first attempt's outcome."""
        if str(existing.event.event_id) != event_id:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "REQUEST_ID_REUSED",
                "this request_id was used for another booking",
                {"booking_id": str(existing.booking_id)},
            )
        deadline = time.monotonic() + self.saga_budget_seconds
        while existing.state is State.PENDING and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the first attempt is still running
            existing = await self._get(existing.booking_id)
        if existing.state is State.FAILED:
            raise domain.failure_error(existing)
        return existing

    async def _lock(
        self, event_id: str, seat_ids: Sequence[str], booking_id: uuid.UUID
    ) -> event_pb2.LockSeatResponse:
        try:
            return await self._down.events.LockSeat(
                event_pb2.LockSeatRequest(
                    event_id=event_id,
                    seat_ids=seat_ids,
                    owner=str(booking_id),
                    ttl_seconds=self._hold_ttl_seconds,
                ),
                **self._down.call_options(),
            )
        except grpc.aio.AioRpcError as error:
            details = error_details(error)
            if details.code in RETRYABLE or details.code is grpc.StatusCode.INTERNAL:
                # The hold may or may not exist; it lapses with its TTL either way.
                raise ServiceError(
                    grpc.StatusCode.UNAVAILABLE,
                    "EVENT_SERVICE_UNAVAILABLE",
                    "seats cannot be held right now; retry",
                ) from error
            if details.reason == "SEAT_UNAVAILABLE":
                BOOKING_OUTCOMES.labels("seats_unavailable").inc()
            raise relay(details) from error

    async def _charge(
        self, booking: Booking, method: payment_pb2.PaymentMethod
    ) -> payment_pb2.Payment:
        request = payment_pb2.ChargeRequest(
            idempotency_key=str(booking.booking_id),
            user_id=str(booking.user_id),
            amount=convert.money(booking.total_minor, booking.currency),
            payment_method=method,
            reference=f"bookings/{booking.booking_id}",
        )
        for attempt in range(CHARGE_ATTEMPTS):
            try:
                return await self._down.payments.Charge(request, **self._down.call_options())
            except grpc.aio.AioRpcError as error:
                details = error_details(error)
                if details.code is grpc.StatusCode.INVALID_ARGUMENT:
                    raise relay(details) from error
                if details.code not in RETRYABLE or attempt == CHARGE_ATTEMPTS - 1:
                    log.warning("charge for %s unsettled: %s", booking.booking_id, details)
                    raise Unsettled from error
                # Safe to repeat: the idempotency key makes it the same charge.
                await asyncio.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    async def _settle_charge(
        self, booking: Booking, payment: payment_pb2.Payment, reacquire: bool
    ) -> Booking:
        """Finishes a booking whose charge has an outcome."""
        payment_id = uuid.UUID(payment.payment_id)
        if payment.state == payment_pb2.PAYMENT_STATE_DECLINED:
            await self._release(booking)
            return await self._fail(booking, payment.decline_code or "card_declined", payment_id)
        if payment.state == payment_pb2.PAYMENT_STATE_REFUNDED:
            await self._release(booking)
            return await self._fail(booking, "refunded", payment_id)
        lost = await self._confirm_seats(booking, reacquire)
        if lost:
            await self._refund(booking, payment, "refund")
            return await self._fail(booking, lost, payment_id)
        done = settled(booking, State.CONFIRMED, payment_id=payment_id)
        message = OutboxMessage("booking.confirmed", convert.confirmed(done))
        if not await self._ledger.settle(done, State.PENDING, message):
            return await self._get(booking.booking_id)
        BOOKING_OUTCOMES.labels("confirmed").inc()
        log.debug("booking %s confirmed", booking.booking_id)  # the ledger is the record
        return done

    async def _confirm_seats(self, booking: Booking, reacquire: bool) -> str:
        """Sells the held seats; '' on success, else why the seats are lost."""
        fencing_token = booking.fencing_token
        for attempt in range(2):
            try:
                await self._down.events.ConfirmSeats(
                    event_pb2.ConfirmSeatsRequest(
                        event_id=str(booking.event.event_id),
                        seat_ids=booking.seat_ids,
                        owner_token=booking.owner_token,
                        fencing_token=fencing_token,
                        booking_id=str(booking.booking_id),
                    ),
                    **self._down.call_options(),
                )
                return ""
            except grpc.aio.AioRpcError as error:
                details = error_details(error)
                if details.code is not grpc.StatusCode.FAILED_PRECONDITION:
                    raise Unsettled from error
                if details.reason != "HOLD_EXPIRED" or not reacquire or attempt:
                    return details.reason.lower() or "seats_unavailable"
            # The hold lapsed while the outcome was unknown; the seats may still be free.
            try:
                held = await self._lock(
                    str(booking.event.event_id), booking.seat_ids, booking.booking_id
                )
            except ServiceError as refused:
                if refused.code is grpc.StatusCode.UNAVAILABLE:
                    raise Unsettled from refused
                return "seats_unavailable"
            fencing_token = held.fencing_token
            await self._ledger.update_hold(booking.booking_id, fencing_token)
        return "seats_unavailable"

    async def _refund(
        self, booking: Booking, payment: payment_pb2.Payment, purpose: str
    ) -> payment_pb2.Payment:
        try:
            return await self._down.payments.Refund(
                payment_pb2.RefundRequest(
                    idempotency_key=f"{booking.booking_id}:{purpose}", payment_id=payment.payment_id
                ),
                **self._down.call_options(),
            )
        except grpc.aio.AioRpcError as error:
            log.warning("refund for %s unsettled: %s", booking.booking_id, error_details(error))
            raise Unsettled from error

    async def _release(self, booking: Booking) -> None:
        """Lets the seats go now; if this fails they go when the hold lapses."""
        try:
            await self._down.events.ReleaseSeat(
                event_pb2.ReleaseSeatRequest(
                    event_id=str(booking.event.event_id),
                    seat_ids=booking.seat_ids,
                    owner_token=booking.owner_token,
                ),
                **self._down.call_options(),
            )
        except grpc.aio.AioRpcError as error:
            log.warning(
                "could not release seats of %s: %s", booking.booking_id, error_details(error)
            )

    async def _fail(self, booking: Booking, reason: str, payment_id: uuid.UUID | None) -> Booking:
        done = settled(booking, State.FAILED, failure_reason=reason, payment_id=payment_id)
        message = OutboxMessage("booking.failed", convert.failed(done))
        if not await self._ledger.settle(done, State.PENDING, message):
            return await self._get(booking.booking_id)
        BOOKING_OUTCOMES.labels("failed").inc()
        log.info("booking %s failed: %s", booking.booking_id, reason)
        return done

    # -- reading --------------------------------------------------------------

    async def get(self, who: Caller, booking_id: str) -> Booking:
        booking = await self._ledger.get(parse_uuid(booking_id, "booking_id"))
        # Another user's booking is "not found": ids cannot be probed.
        if booking is None or not (who.is_admin or str(booking.user_id) == who.user_id):
            raise not_found("booking", booking_id)
        return booking

    async def list(
        self, who: Caller, page_size: int, page_token: str, state: State | None
    ) -> tuple[list[Booking], str]:
        limit = pagination.page_size(page_size)
        before = pagination.decode_keyset(page_token)
        user = None if who.is_admin else uuid.UUID(who.user_id)
        found = await self._ledger.page(user, state, limit + 1, before)
        return pagination.keyset_page(found, limit, lambda b: (b.create_time, b.booking_id))

    # -- cancelling -----------------------------------------------------------

    async def cancel(self, who: Caller, booking_id: str) -> Booking:
        booking = await self.get(who, booking_id)
        domain.check_cancellable(booking, datetime.now(UTC))
        await self._ledger.request_cancel(booking.booking_id)
        try:
            return await self._finish_cancel(booking)
        except Unsettled as exc:
            raise pending_error(booking.booking_id, "the refund is not through yet") from exc

    async def _finish_cancel(self, booking: Booking) -> Booking:
        assert booking.payment_id is not None
        refunded = await self._refund(
            booking, payment_pb2.Payment(payment_id=str(booking.payment_id)), "cancel"
        )
        try:
            await self._down.events.ReturnSeats(
                event_pb2.ReturnSeatsRequest(
                    event_id=str(booking.event.event_id), booking_id=str(booking.booking_id)
                ),
                **self._down.call_options(),
            )
        except grpc.aio.AioRpcError as error:
            raise Unsettled from error
        done = settled(booking, State.CANCELLED)
        message = OutboxMessage(
            "booking.cancelled", convert.cancelled(done, refunded.refunded_amount.amount_minor)
        )
        if not await self._ledger.settle(done, State.CONFIRMED, message):
            current = await self._get(booking.booking_id)
            domain.check_cancellable(current, datetime.now(UTC))
            return current
        log.info("booking %s cancelled", booking.booking_id)
        BOOKING_OUTCOMES.labels("cancelled").inc()
        return done

    # -- the sweep ------------------------------------------------------------

    async def sweep(self) -> int:
        """Settles PENDING bookings whose hold has lapsed, and unfinished cancellations."""
        claimed = await self._ledger.claim_unsettled(self._settle_after_seconds, 20)
        for booking in claimed:
            try:
                if booking.state is State.PENDING:
                    await self._settle_abandoned(booking)
                else:
                    await self._finish_cancel(booking)
            except Unsettled:
                log.info("booking %s still unsettled; next sweep", booking.booking_id)
        return len(claimed)

    async def _settle_abandoned(self, booking: Booking) -> None:
        try:
            payment = await self._down.payments.LookupPayment(
                payment_pb2.LookupPaymentRequest(idempotency_key=str(booking.booking_id)),
                **self._down.call_options(),
            )
        except grpc.aio.AioRpcError as error:
            if error.code() is not grpc.StatusCode.NOT_FOUND:
                raise Unsettled from error
            # No money was taken: let the seats go.
            await self._release(booking)
            await self._fail(booking, "abandoned", None)
            return
        settled = await self._settle_charge(booking, payment, reacquire=True)
        log.info("sweep settled %s as %s", booking.booking_id, settled.state.name)

    def sweeping(self, interval_seconds: float) -> contextlib.AbstractAsyncContextManager[None]:
        """Runs the sweep every interval for as long as the service runs."""
        return periodically(self.sweep, interval_seconds, "sweep")

    async def _get(self, booking_id: uuid.UUID) -> Booking:
        found = await self._ledger.get(booking_id)
        if found is None:
            raise not_found("booking", str(booking_id))
        return found
