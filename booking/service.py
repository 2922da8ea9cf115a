"""Booking use cases: the saga, the retries that resume it and the sweep
that settles what nobody came back for.

CreateBooking: hold the seats -> record PENDING -> charge (the booking id is
the idempotency key) -> sell the seats -> CONFIRMED, announced in the same
unit of work. A decline, or seats lost to someone else, releases what the
booking still holds and fails it at once (money taken goes back first).

A run of the saga retries a service that is away through its retry window
(runtime.retry), so a restart costs the buyer nothing. A run whose outcome is
still unknown after that leaves the booking PENDING, and then whoever comes
back drives it on from where it stopped: the buyer retrying with the same
`request_id` (answered within moments, settled or BOOKING_PENDING), or the
sweep once no run can still be going, while the hold still lasts (the
settings insist on that): from what the payment service says happened, money
taken means the seats are sold (held again if they are still free) or the
money goes back; no money means the seats go back. Every step is idempotent
or owner-checked, so two runs of one booking (a retry on another replica)
reach the same end, and a settlement is conditional, so it is announced once.

The use cases talk to the world through the protocols of `booking.gateways`
only, so every branch runs in-process on fakes as well as over gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
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
from runtime.identity import Caller, require_verified_email
from runtime.retry import RetryPolicy
from runtime.tasks import periodically

log = logging.getLogger(__name__)

BOOKING_OUTCOMES = Counter(
    "booking_outcomes_total",
    "Bookings settled, by outcome: confirmed, failed, cancelled, seats_unavailable, pending.",
    ["outcome"],
)
POLL_SECONDS = 0.05


class Unsettled(Exception):
    """A saga step's outcome is unknown for now; a retry or the sweep settles it."""


def pending_error(booking_id: uuid.UUID, what: str) -> Unavailable:
    return Unavailable(
        "BOOKING_PENDING",
        f"{what}; the booking stays PENDING: retry with the same request_id to resume it, "
        "or GET it (it settles on its own within minutes)",
        {"booking_id": str(booking_id), "retry_after_seconds": "1"},
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
        require_verified_email: bool = False,
    ) -> None:
        self._ledger = ledger
        self._require_verified_email = require_verified_email
        self._seats = seats
        self._payments = payments
        self._hold_ttl_seconds = hold_ttl_seconds
        self._retry = retry
        # The sweep only takes a booking no run can still be driving (a run starts
        # with the row touched: created, leased by a retry, claimed by a sweep),
        # so it never decides "no money" beside a charge still in flight.
        self._settle_after_seconds = retry.saga_budget_seconds + sweep_grace_seconds
        # The runs going on in this process, one per booking: a retry joins its
        # booking's run instead of starting another.
        self._runs: dict[uuid.UUID, asyncio.Task[Booking]] = {}

    # -- the saga -------------------------------------------------------------

    async def create(
        self,
        who: Caller,
        event_id: str,
        seat_ids: Sequence[str],
        card: Card | None,
        request_id: str,
        hold_id: str = "",
    ) -> Booking:
        domain.check_request(event_id, seat_ids, card is not None, request_id, hold_id)
        assert card is not None
        if self._require_verified_email:
            require_verified_email(who)
        booking_id = domain.booking_id_for(who.user_id, request_id)
        existing = await self._ledger.get(booking_id)
        if existing is None:
            until = self._retry.deadline()
            try:
                if hold_id:
                    held = await self._claim(hold_id, who, booking_id, event_id)
                else:
                    held = await self._hold(event_id, seat_ids, booking_id, until)
            except ServiceError:
                # A concurrent retry of this request may have sold the seats to this
                # very booking between the ledger check above and the hold.
                existing = await self._ledger.get(booking_id)
                if existing is None:
                    raise
            else:
                booking = _pending(booking_id, who, request_id, held)
                if booking.total_minor > domain.MAX_TOTAL_MINOR:
                    await self._release(booking, until)
                    raise bad_field("seat_ids", "these seats cost more than one booking can charge")
                if await self._ledger.add(booking):
                    return await self._first_run(booking, card, until)
                existing = await self._get(booking_id)  # a concurrent retry got there first
        if str(existing.event.event_id) != (event_id or str(existing.event.event_id)):
            raise domain.request_id_reused(existing)
        if existing.state is State.PENDING:
            return await self._resume(existing, card)
        return _outcome(existing)

    async def _first_run(self, booking: Booking, card: Card, until: float) -> Booking:
        try:
            return await self._reply(self._start(booking, card, until), booking.booking_id, None)
        except Invalid:
            # Bad card data: nothing was charged, so leave no trace of the attempt.
            await self._release(booking, until)
            await self._ledger.delete_pending(booking.booking_id)
            raise

    async def _resume(self, booking: Booking, card: Card) -> Booking:
        """A retry of a request whose booking is still PENDING: drives the saga on
        from where it stopped (joining the run this process has going, if any),
        and answers within moments either way."""
        run = self._runs.get(booking.booking_id)
        if run is None:
            # Taken only if nobody touched it since we read it: not the sweep,
            # not another replica's retry (that one's run answers for us then).
            leased = await self._ledger.lease(booking.booking_id, booking.update_time)
            if leased is None:
                return await self._poll(booking.booking_id)
            run = self._start(leased, card, self._retry.deadline())
        return await self._reply(run, booking.booking_id, self._retry.retry_reply_seconds)

    def _start(self, booking: Booking, card: Card | None, until: float) -> asyncio.Task[Booking]:
        """The run driving this booking in this process, started if there is none.
        It goes on when the request that started it goes away (a client giving
        up, a retry answered PENDING) and a draining server waits for it."""
        run = self._runs.get(booking.booking_id)
        if run is None:
            run = asyncio.create_task(self._run(booking, card, until))
            self._runs[booking.booking_id] = run
            run.add_done_callback(lambda _: self._runs.pop(booking.booking_id, None))
        return run

    async def _reply(
        self, run: asyncio.Task[Booking], booking_id: uuid.UUID, within: float | None
    ) -> Booking:
        try:
            settled = await asyncio.wait_for(asyncio.shield(run), within)
        except TimeoutError as exc:
            BOOKING_OUTCOMES.labels("pending").inc()
            raise pending_error(booking_id, "the booking is still settling") from exc
        except Unsettled as exc:
            BOOKING_OUTCOMES.labels("pending").inc()
            raise pending_error(booking_id, str(exc)) from exc
        return _outcome(settled)

    async def _poll(self, booking_id: uuid.UUID) -> Booking:
        """The booking once settled by a run elsewhere, if that is within moments."""
        deadline = time.monotonic() + self._retry.retry_reply_seconds
        booking = await self._get(booking_id)
        while booking.state is State.PENDING and time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
            booking = await self._get(booking_id)
        return _outcome(booking)

    async def _run(self, booking: Booking, card: Card | None, until: float) -> Booking:
        """Drives a PENDING booking to its end: charging it (the first attempt, or a
        retry bringing the card again), or, for the sweep, from the payment made."""
        if card is None:
            payment = await self._look_up(booking)
            if payment is None:
                # No money was taken: let the seats go.
                await self._release(booking, until)
                return await self._fail(booking, "abandoned", None)
        else:
            payment = await self._charge(booking, card, until)
        return await self._settle_charge(booking, payment, until)

    async def _claim(self, hold_id: str, who: Caller, booking_id: uuid.UUID, event_id: str) -> Hold:
        """A hold the buyer made (CreateHold) instead of a fresh one: from here on
        the saga runs as for seats it held itself, with the hold's owner token."""
        try:
            held = await self._seats.claim(hold_id, uuid.UUID(who.user_id), booking_id)
        except (Unavailable, Internal) as error:
            raise event_unavailable() from error
        if event_id and str(held.event.event_id) != event_id:
            raise bad_field("event_id", "is not the event of the hold")
        return held

    async def _hold(
        self,
        event_id: str,
        seat_ids: Sequence[str],
        booking_id: uuid.UUID,
        until: float,
        owner: str = "",
    ) -> Hold:
        async def hold() -> Hold:
            # The booking id is the owner: holding again what it holds is a no-op.
            return await self._seats.hold(
                event_id, seat_ids, owner or str(booking_id), self._hold_ttl_seconds
            )

        try:
            return await self._retry.retrying(hold, until)
        except (Unavailable, Internal) as error:
            # The hold may or may not exist; it lapses with its TTL either way.
            raise event_unavailable() from error
        except Conflict as refused:
            if refused.reason == "SEAT_UNAVAILABLE":
                BOOKING_OUTCOMES.labels("seats_unavailable").inc()
            raise

    async def _charge(self, booking: Booking, card: Card, until: float) -> Payment:
        async def charge() -> Payment:
            # Safe to repeat: the idempotency key makes it the same charge.
            return await self._payments.charge(
                str(booking.booking_id),
                booking.user_id,
                booking.total_minor,
                booking.currency,
                card,
                f"bookings/{booking.booking_id}",
            )

        try:
            return await self._retry.retrying(charge, until)
        except Invalid:
            raise
        except ServiceError as error:
            log.warning("charge for %s unsettled: %s", booking.booking_id, error)
            raise Unsettled("the payment's outcome is not known yet") from error

    async def _look_up(self, booking: Booking) -> Payment | None:
        try:
            return await self._payments.look_up(str(booking.booking_id))
        except ServiceError as error:
            raise Unsettled("the payment's outcome is not known yet") from error

    async def _settle_charge(self, booking: Booking, payment: Payment, until: float) -> Booking:
        """Finishes a booking whose charge has an outcome."""
        if payment.state is PaymentState.DECLINED:
            await self._release(booking, until)
            return await self._fail(
                booking, payment.decline_code or "card_declined", payment.payment_id
            )
        if payment.state is PaymentState.REFUNDED:
            await self._release(booking, until)
            return await self._fail(booking, "refunded", payment.payment_id)
        lost = await self._sell(booking, until)
        if lost:
            # Whatever the booking still holds goes back at once, then the money.
            await self._release(booking, until)
            await self._refund(booking, payment.payment_id, "refund", until)
            return await self._fail(booking, lost, payment.payment_id)
        done = booking.settled(State.CONFIRMED, payment_id=payment.payment_id)
        if not await self._ledger.settle(Confirmed(done), State.PENDING):
            return await self._get(booking.booking_id)
        BOOKING_OUTCOMES.labels("confirmed").inc()
        log.debug("booking %s confirmed", booking.booking_id)  # the ledger is the record
        return done

    async def _sell(self, booking: Booking, until: float) -> str:
        """Sells the held seats; '' on success, else why the seats are lost. A hold
        that lapsed (or that Redis forgot) is taken again if the seats are free."""
        event_id = str(booking.event.event_id)
        fencing_token = booking.fencing_token
        for attempt in range(2):

            async def confirm(token: int = fencing_token) -> None:
                await self._seats.confirm(
                    event_id, booking.seat_ids, booking.owner_token, token, booking.booking_id
                )

            try:
                await self._retry.retrying(confirm, until)
                return ""
            except FailedPrecondition as refused:
                if refused.reason != "HOLD_EXPIRED" or attempt:
                    return refused.reason.lower() or "seats_unavailable"
            except ServiceError as error:
                raise Unsettled("the seats could not be confirmed yet") from error
            try:
                # Under the booking's own owner token (a CreateHold's, when it
                # bought one), which the sale then presents.
                held = await self._hold(
                    event_id, booking.seat_ids, booking.booking_id, until, booking.owner_token
                )
            except Unavailable as error:
                raise Unsettled("the seats could not be confirmed yet") from error
            except ServiceError:
                return "seats_unavailable"
            fencing_token = held.fencing_token
            await self._ledger.update_hold(booking.booking_id, fencing_token)
        return "seats_unavailable"

    async def _refund(
        self, booking: Booking, payment_id: uuid.UUID, purpose: str, until: float
    ) -> Payment:
        async def refund() -> Payment:
            return await self._payments.refund(payment_id, f"{booking.booking_id}:{purpose}")

        try:
            return await self._retry.retrying(refund, until)
        except ServiceError as error:
            log.warning("refund for %s unsettled: %s", booking.booking_id, error)
            raise Unsettled("the refund is not through yet") from error

    async def _release(self, booking: Booking, until: float) -> None:
        """Lets the seats go now; if this fails they go when the hold lapses."""

        async def release() -> None:
            await self._seats.release(
                str(booking.event.event_id), booking.seat_ids, booking.owner_token
            )

        try:
            await self._retry.retrying(release, until)
        except ServiceError as error:
            log.warning("could not release seats of %s: %s", booking.booking_id, error)

    async def _return_seats(self, booking: Booking, until: float) -> None:
        """Puts a cancelled booking's seats back on sale (safe to repeat: a
        return of seats already returned returns nothing)."""

        async def give_back() -> None:
            await self._seats.return_seats(str(booking.event.event_id), booking.booking_id)

        try:
            await self._retry.retrying(give_back, until)
        except ServiceError as error:
            raise Unsettled("the seats are not back on sale yet") from error

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
        until = self._retry.deadline()
        refunded = await self._refund(booking, booking.payment_id, "cancel", until)
        await self._return_seats(booking, until)
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
        """Settles PENDING bookings nobody came back for, and unfinished cancellations."""
        claimed = await self._ledger.claim_unsettled(self._settle_after_seconds, 20)
        await asyncio.gather(*(self._settle_unsettled(booking) for booking in claimed))
        return len(claimed)

    async def _settle_unsettled(self, booking: Booking) -> None:
        try:
            if booking.state is State.PENDING:
                run = self._start(booking, None, self._retry.deadline())
                settled = await asyncio.shield(run)
                log.info("sweep settled %s as %s", booking.booking_id, settled.state.name)
            else:
                await self._finish_cancel(booking)
        except Unsettled:
            log.info("booking %s still unsettled; next sweep", booking.booking_id)

    @contextlib.asynccontextmanager
    async def working(self, sweep_interval_seconds: float) -> AsyncIterator[None]:
        """Sweeps every interval for as long as the service runs; on the way out
        lets the runs still going (a retry answered PENDING, a client that gave
        up) finish, so a draining service leaves nothing for the sweep."""
        try:
            async with periodically(self.sweep, sweep_interval_seconds, "sweep"):
                yield
        finally:
            if self._runs:
                log.info("waiting for %d bookings still settling", len(self._runs))
                await asyncio.wait(
                    list(self._runs.values()), timeout=self._retry.saga_budget_seconds
                )

    async def _get(self, booking_id: uuid.UUID) -> Booking:
        found = await self._ledger.get(booking_id)
        if found is None:
            raise not_found("booking", str(booking_id))
        return found


def _outcome(booking: Booking) -> Booking:
    """What a request for this booking answers: the booking once CONFIRMED (or
    CANCELLED since), the failure it met, or BOOKING_PENDING, never a PENDING body."""
    if booking.state is State.FAILED:
        raise domain.failure_error(booking)
    if booking.state is State.PENDING:
        raise pending_error(booking.booking_id, "the booking is still settling")
    return booking


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
