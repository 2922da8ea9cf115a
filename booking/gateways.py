"""What the saga needs from outside the booking service, as plain Python.

`SeatHolds` is the event service (hold, release, sell and return seats),
`Payments` the payment service (charge, refund, look up), and `Ledger` the
booking database with its outbox. The use cases see only these protocols and
the dataclasses below; `booking.grpc_gateways` and `booking.repository` are
the real adapters, `tests/fakes.py` the in-memory ones the saga's tests run on.

Gateways raise the kinds of `runtime.errors` as the service behind them sent
them (a refusal passes on as it was); `Unavailable` means the outcome of the
call is not known (the service was away or did not answer in time).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from booking.domain import Announcement, Booking, CheckIn, EventSnapshot, State


@dataclass(frozen=True)
class HeldSeat:
    seat_id: str
    tier: int
    price_minor: int
    currency: str


@dataclass(frozen=True)
class Hold:
    """Seats held for an owner until `expire_time`, priced by the event service."""

    owner_token: str
    fencing_token: int
    expire_time: datetime
    seats: tuple[HeldSeat, ...]
    event: EventSnapshot


class SeatHolds(Protocol):
    """The event service's seats, as the saga uses them."""

    async def hold(
        self, event_id: str, seat_ids: Sequence[str], owner: str, ttl_seconds: int
    ) -> Hold:
        """All the seats or none: Conflict SEAT_UNAVAILABLE when one is taken."""

    async def claim(self, hold_id: str, user_id: uuid.UUID, booking_id: uuid.UUID) -> Hold:
        """The user's hold (CreateHold), handed to the booking once: NotFound
        HOLD_NOT_FOUND, FailedPrecondition HOLD_EXPIRED or HOLD_USED otherwise."""

    async def release(self, event_id: str, seat_ids: Sequence[str], owner_token: str) -> None:
        """Lets go of the owner's holds; seats held by someone else stay theirs."""

    async def confirm(
        self,
        event_id: str,
        seat_ids: Sequence[str],
        owner_token: str,
        fencing_token: int,
        booking_id: uuid.UUID,
    ) -> None:
        """Sells held seats to the booking; FailedPrecondition HOLD_EXPIRED when the
        hold is no longer the owner's, SEAT_UNAVAILABLE when a seat is sold."""

    async def return_seats(self, event_id: str, booking_id: uuid.UUID) -> None:
        """Puts a booking's sold seats back on sale."""


class PaymentState(enum.IntEnum):
    """Values match ticketing.payment.v1.PaymentState."""

    SUCCEEDED = 1
    DECLINED = 2
    REFUNDED = 3


@dataclass(frozen=True)
class Payment:
    payment_id: uuid.UUID
    state: PaymentState
    decline_code: str = ""
    refunded_minor: int = 0


@dataclass(frozen=True)
class Card:
    """What the buyer pays with; passed through to the payment service, never kept."""

    # Left out of repr so a stray log line or traceback cannot print them.
    number: str = field(repr=False)
    exp_month: int
    exp_year: int
    cvc: str = field(repr=False)


class Payments(Protocol):
    """The payment service, as the saga uses it. Every call is idempotent by key."""

    async def charge(
        self,
        idempotency_key: str,
        user_id: uuid.UUID,
        amount_minor: int,
        currency: str,
        card: Card,
        reference: str,
    ) -> Payment:
        """The payment for this key (a decline is a payment too); Invalid when the
        card data is wrong, and nothing was charged then."""

    async def refund(self, payment_id: uuid.UUID, idempotency_key: str) -> Payment:
        """Gives the whole amount back, at most once."""

    async def look_up(self, idempotency_key: str) -> Payment | None:
        """The payment made with this key, or None if none was."""


class EventRefundLedger(Protocol):
    """The cancelled events whose bookings are refunded (booking.refunds)."""

    async def add(self, event_id: uuid.UUID, reason: str, cancel_time: datetime) -> bool:
        """Records a cancelled event; False if it was recorded before."""

    async def unfinished(self) -> list[tuple[uuid.UUID, str]]:
        """(event id, reason) of every cancellation not yet done."""

    async def mark(self, event_id: uuid.UUID, reason: str) -> int:
        """Marks the event's confirmed bookings as going with it; how many were new."""

    async def claim(self, event_id: uuid.UUID, lease_seconds: float, limit: int) -> list[Booking]:
        """Marked bookings not yet cancelled nor leased, leased to the caller."""

    async def progress(self, event_id: uuid.UUID) -> tuple[int, int, int]:
        """(marked, of those cancelled, still being paid or not yet marked)."""

    async def report(self, event_id: uuid.UUID, total: int, refunded: int, finished: bool) -> bool:
        """Announces the progress if it changed; finished ends the cancellation."""


class Ledger(Protocol):
    """The bookings and their outbox. Every call is one unit of work, all or
    nothing; a booking settles together with the message announcing it."""

    async def add(self, booking: Booking) -> bool:
        """False if a booking with this id exists already (a concurrent retry)."""

    async def get(self, booking_id: uuid.UUID) -> Booking | None: ...

    async def settle(self, announcement: Announcement, from_state: State) -> bool:
        """Moves the announced booking to its state, payment and failure reason if
        it is still in from_state, and writes the announcement to the outbox;
        False (and nothing written) if someone else moved it."""

    async def lease(self, booking_id: uuid.UUID, seen_update_time: datetime) -> Booking | None:
        """Touches a PENDING booking (so the sweep leaves it alone while a run
        drives it) if it is untouched since `seen_update_time`; None if someone
        else touched or settled it meanwhile."""

    async def update_hold(self, booking_id: uuid.UUID, fencing_token: int) -> None:
        """Records the fencing token of a new hold on the booking's seats."""

    async def request_cancel(self, booking_id: uuid.UUID) -> None:
        """Remembers that the booking is to be cancelled, for the sweep to finish."""

    async def delete_pending(self, booking_id: uuid.UUID) -> None:
        """Forgets a PENDING booking that never charged anything."""

    async def page(
        self,
        user_id: uuid.UUID | None,
        state: State | None,
        limit: int,
        before: tuple[datetime, uuid.UUID] | None,
    ) -> list[Booking]:
        """Newest first; a user's own, or everyone's for None."""

    async def claim_unsettled(self, older_than_seconds: float, limit: int) -> list[Booking]:
        """PENDING bookings and unfinished cancellations untouched for that long,
        leased to this caller: they count as touched now, so no other sweeper
        takes them for a while."""


class CheckIns(Protocol):
    """The tickets admitted at the door; each at most once."""

    async def record(self, check_in: CheckIn) -> tuple[datetime, bool]:
        """The ticket's check-in time, and whether this call made it (False: it
        was checked in before, at that time). Only the call that makes it
        announces it, in the same transaction."""


class Organizers(Protocol):
    """Who organizes an event (the event service)."""

    async def organizer_of(self, event_id: uuid.UUID) -> uuid.UUID:
        """NotFound if there is no such event."""
