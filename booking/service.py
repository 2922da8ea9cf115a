"""Booking use cases: the synchronous saga and the sweep that settles what it
could not.

CreateBooking: hold the seats -> record PENDING -> charge (the booking id is
the idempotency key) -> sell the seats -> CONFIRMED, announced in the same
unit of work. A decline releases the seats and fails the booking. When a
step's outcome is unknown (a service timed out or died) the booking stays
PENDING and the sweep settles it once its hold has lapsed, from what the
payment service says happened: money taken means the seats are sold (re-held
if they are still free) or the money goes back; no money means the seats go
back. So no seat stays held past the TTL, no money is kept without a ticket,
and no ticket exists without money.

The use cases talk to the world through the protocols of `booking.gateways`
only, so every branch runs in-process on fakes as well as over gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from prometheus_client import Counter

from booking import domain
from booking.domain import BookedSeat, Booking, Cancelled, Confirmed, Failed, State
from booking.gateways import Card, Hold, Ledger, Payment, Payments, PaymentState, SeatHolds
from runtime import pagination
from runtime.errors import (
    Conflict,
    FailedPrecondition,
    Internal,
    Invalid,
    ServiceError,
    Unavailable,
    bad_field,
    not_found,
    parse_uuid,
)
from runtime.identity import Caller
from runtime.retry import RetryPolicy
from runtime.tasks import periodically

log = logging.getLogger(__name__)

BOOKING_OUTCOMES = Counter(
    "booking_outcomes_total",
    "Bookings settled, by outcome: confirmed, failed, cancelled, seats_unavailable, pending.",
    ["outcome"],
)
REPLAY_POLL_SECONDS = 0.05


class Unsettled(Exception):
    """A saga step's outcome is unknown for now; the sweep will settle it."""


def pending_error(booking_id: uuid.UUID, what: str) -> Unavailable:
    return Unavailable(
        "BOOKING_PENDING",
        f"{what}; the booking stays PENDING and settles on its own within minutes "
        "(retry with the same request_id, or GET it)",
        {"booking_id": str(booking_id)},
    )


def event_unavailable() -> Unavailable:
    return Unavailable("EVENT_SERVICE_UNAVAILABLE", "seats cannot be held right now; retry")


class BookingUseCases:
    def __init__(
        self,
        ledger: Ledger,
        seats: SeatHolds,
        payments: Payments,
        hold_ttl_seconds: int,
        retry: RetryPolicy,
        sweep_grace_seconds: float,
    ) -> None:
        self._ledger = ledger
        self._seats = seats
        self._payments = payments
        self._hold_ttl_seconds = hold_ttl_seconds
        self._retry = retry
        # The sweep only touches a booking whose saga cannot still be running and
        # whose hold has lapsed, so it never races a live request.
        self._settle_after_seconds = (
            max(hold_ttl_seconds, retry.saga_budget_seconds) + sweep_grace_seconds
        )

    # -- the saga -------------------------------------------------------------

    async def create(
        self,
        who: Caller,
        event_id: str,
        seat_ids: Sequence[str],
        card: Card | None,
        request_id: str,
    ) -> Booking:
        domain.check_request(event_id, seat_ids, card is not None, request_id)
        assert card is not None
        booking_id = domain.booking_id_for(who.user_id, request_id)
        existing = await self._ledger.get(booking_id)
        if existing is not None:
            return await self._replay(existing, event_id)

        try:
            held = await self._hold(event_id, seat_ids, booking_id)
        except ServiceError:
            # A concurrent retry of this request may have sold the seats to this
            # very booking between the ledger check above and the hold.
            existing = await self._ledger.get(booking_id)
            if existing is None:
                raise
            return await self._replay(existing, event_id)
        booking = _pending(booking_id, who, request_id, held)
        if booking.total_minor > domain.MAX_TOTAL_MINOR:
            await self._release(booking)
            raise bad_field("seat_ids", "these seats cost more than one booking can charge")
        if not await self._ledger.add(booking):
            # A concurrent retry of the same request got there first.
            return await self._replay(await self._get(booking_id), event_id)
        return await self._pay(booking, card)

    async def _pay(self, booking: Booking, card: Card) -> Booking:
        """Charges a PENDING booking and settles it by the outcome."""
        try:
            payment = await self._charge(booking, card)
        except Invalid:
            # Bad card data: nothing was charged, so leave no trace of the attempt.
            await self._release(booking)
            await self._ledger.delete_pending(booking.booking_id)
            raise
        except Unsettled as exc:
            BOOKING_OUTCOMES.labels("pending").inc()
            raise pending_error(
                booking.booking_id, "the payment's outcome is not known yet"
            ) from exc
        try:
            settled = await self._settle_charge(booking, payment, reacquire=False)
        except Unsettled as exc:
            BOOKING_OUTCOMES.labels("pending").inc()
            raise pending_error(booking.booking_id, "the seats could not be confirmed yet") from exc
        if settled.state is State.FAILED:
            raise domain.failure_error(settled)
        return settled

    async def _replay(self, existing: Booking, event_id: str) -> Booking:
        """Answers a retried request with the first attempt's outcome."""
        if str(existing.event.event_id) != event_id:
            raise domain.request_id_reused(existing)
        deadline = time.monotonic() + self._retry.saga_budget_seconds
        while existing.state is State.PENDING and time.monotonic() < deadline:
            await asyncio.sleep(REPLAY_POLL_SECONDS)  # the first attempt is still running
            existing = await self._get(existing.booking_id)
        if existing.state is State.FAILED:
            raise domain.failure_error(existing)
        return existing

    async def _hold(self, event_id: str, seat_ids: Sequence[str], booking_id: uuid.UUID) -> Hold:
        try:
            return await self._seats.hold(
                event_id, seat_ids, str(booking_id), self._hold_ttl_seconds
            )
        except (Unavailable, Internal) as error:
            # The hold may or may not exist; it lapses with its TTL either way.
            raise event_unavailable() from error
        except Conflict as refused:
            if refused.reason == "SEAT_UNAVAILABLE":
                BOOKING_OUTCOMES.labels("seats_unavailable").inc()
            raise

    async def _charge(self, booking: Booking, card: Card) -> Payment:
        for attempt in range(self._retry.charge_attempts):
            try:
                return await self._payments.charge(
                    str(booking.booking_id),
                    booking.user_id,
                    booking.total_minor,
                    booking.currency,
                    card,
                    f"bookings/{booking.booking_id}",
                )
            except Invalid:
                raise
            except ServiceError as error:
                last = attempt == self._retry.charge_attempts - 1
                if not isinstance(error, Unavailable) or last:
                    log.warning("charge for %s unsettled: %s", booking.booking_id, error)
                    raise Unsettled from error
                # Safe to repeat: the idempotency key makes it the same charge.
                await asyncio.sleep(self._retry.backoff(attempt))
        raise AssertionError("unreachable")

    async def _settle_charge(self, booking: Booking, payment: Payment, reacquire: bool) -> Booking:
        """Finishes a booking whose charge has an outcome."""
        if payment.state is PaymentState.DECLINED:
            await self._release(booking)
            return await self._fail(
                booking, payment.decline_code or "card_declined", payment.payment_id
            )
        if payment.state is PaymentState.REFUNDED:
            await self._release(booking)
            return await self._fail(booking, "refunded", payment.payment_id)
        lost = await self._sell(booking, reacquire)
        if lost:
            await self._refund(booking, payment.payment_id, "refund")
            return await self._fail(booking, lost, payment.payment_id)
        done = booking.settled(State.CONFIRMED, payment_id=payment.payment_id)
        if not await self._ledger.settle(Confirmed(done), State.PENDING):
            return await self._get(booking.booking_id)
        BOOKING_OUTCOMES.labels("confirmed").inc()
        log.debug("booking %s confirmed", booking.booking_id)  # the ledger is the record
        return done

    async def _sell(self, booking: Booking, reacquire: bool) -> str:
        """Sells the held seats; '' on success, else why the seats are lost."""
        event_id = str(booking.event.event_id)
        fencing_token = booking.fencing_token
        for attempt in range(2):
            try:
                await self._seats.confirm(
                    event_id,
                    booking.seat_ids,
                    booking.owner_token,
                    fencing_token,
                    booking.booking_id,
                )
                return ""
            except FailedPrecondition as refused:
                if refused.reason != "HOLD_EXPIRED" or not reacquire or attempt:
                    return refused.reason.lower() or "seats_unavailable"
            except ServiceError as error:
                raise Unsettled from error
            # The hold lapsed while the outcome was unknown; the seats may still be free.
            try:
                held = await self._hold(event_id, booking.seat_ids, booking.booking_id)
            except Unavailable as error:
                raise Unsettled from error
            except ServiceError:
                return "seats_unavailable"
            fencing_token = held.fencing_token
            await self._ledger.update_hold(booking.booking_id, fencing_token)
        return "seats_unavailable"

    async def _refund(self, booking: Booking, payment_id: uuid.UUID, purpose: str) -> Payment:
        try:
            return await self._payments.refund(payment_id, f"{booking.booking_id}:{purpose}")
        except ServiceError as error:
            log.warning("refund for %s unsettled: %s", booking.booking_id, error)
            raise Unsettled from error

    async def _release(self, booking: Booking) -> None:
        """Lets the seats go now; if this fails they go when the hold lapses."""
        try:
            await self._seats.release(
                str(booking.event.event_id), booking.seat_ids, booking.owner_token
            )
        except ServiceError as error:
            log.warning("could not release seats of %s: %s", booking.booking_id, error)

    async def _fail(self, booking: Booking, reason: str, payment_id: uuid.UUID | None) -> Booking:
        done = booking.settled(State.FAILED, failure_reason=reason, payment_id=payment_id)
        if not await self._ledger.settle(Failed(done), State.PENDING):
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
        """The buyer's (or an admin's) cancellation, before the event starts."""
        booking = await self.get(who, booking_id)
        domain.check_cancellable(booking, datetime.now(UTC))
        return await self.refund_and_cancel(booking)

    async def refund_and_cancel(self, booking: Booking) -> Booking:
        """Refunds a CONFIRMED booking and gives its seats back, for whoever decided
        it goes (its buyer, or a consumer of an event's cancellation). The request
        is recorded first, so what this cannot finish the sweep does."""
        await self._ledger.request_cancel(booking.booking_id)
        try:
            return await self._finish_cancel(booking)
        except Unsettled as exc:
            raise pending_error(booking.booking_id, "the refund is not through yet") from exc

    async def _finish_cancel(self, booking: Booking) -> Booking:
        assert booking.payment_id is not None
        refunded = await self._refund(booking, booking.payment_id, "cancel")
        try:
            await self._seats.return_seats(str(booking.event.event_id), booking.booking_id)
        except ServiceError as error:
            raise Unsettled from error
        done = booking.settled(State.CANCELLED)
        if not await self._ledger.settle(Cancelled(done, refunded.refunded_minor), State.CONFIRMED):
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
            payment = await self._payments.look_up(str(booking.booking_id))
        except ServiceError as error:
            raise Unsettled from error
        if payment is None:
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


def _pending(booking_id: uuid.UUID, who: Caller, request_id: str, held: Hold) -> Booking:
    """The booking a fresh hold makes, before any money moves."""
    now = datetime.now(UTC)
    seats = tuple(BookedSeat(s.seat_id, s.tier, s.price_minor) for s in held.seats)
    return Booking(
        booking_id=booking_id,
        user_id=uuid.UUID(who.user_id),
        user_email=who.email,
        request_id=request_id or str(booking_id),
        event=held.event,
        seats=seats,
        currency=held.seats[0].currency,
        total_minor=domain.total(seats),
        state=State.PENDING,
        owner_token=held.owner_token,
        fencing_token=held.fencing_token,
        create_time=now,
        update_time=now,
    )
