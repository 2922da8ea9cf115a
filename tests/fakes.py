"""In-memory stand-ins for the booking saga's gateways (booking.gateways):
the event service's seats, the payment service and the ledger with its
outbox. They keep the real ones' rules (all-or-nothing holds, owner-checked
sales with fencing, idempotent charges and refunds, conditional settlement),
and let a test make any call fail, before or after it took effect, so every
branch of the saga runs in-process in milliseconds."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from booking.domain import Announcement, Booking, EventSnapshot, State
from booking.gateways import Card, HeldSeat, Hold, Payment, PaymentState
from runtime.errors import (
    Conflict,
    FailedPrecondition,
    Invalid,
    NotFound,
    ServiceError,
    not_found,
)

PRICES = {"standard": (1, 5000), "vip": (2, 15000)}
DECLINES = {"4000000000000002": "card_declined", "4000000000009995": "insufficient_funds"}


@dataclass
class Fault:
    error: ServiceError
    after_effect: bool  # the call did its work, and its answer was lost


class Faults:
    """Failures queued per method name; each call takes the next one, if any. A
    fault added with times=None is an outage: every call fails until `clear`."""

    def __init__(self) -> None:
        self._queued: dict[str, list[Fault]] = defaultdict(list)
        self._outages: dict[str, Fault] = {}

    def add(
        self,
        method: str,
        error: ServiceError,
        times: int | None = 1,
        after_effect: bool = False,
    ) -> None:
        if times is None:
            self._outages[method] = Fault(error, after_effect)
        else:
            self._queued[method] += [Fault(error, after_effect) for _ in range(times)]

    def clear(self, method: str) -> None:
        """The outage of `method` is over."""
        self._outages.pop(method, None)

    def take(self, method: str) -> Fault | None:
        queued = self._queued[method]
        fault = queued.pop(0) if queued else self._outages.get(method)
        if fault and not fault.after_effect:
            raise fault.error
        return fault


def raise_after(fault: Fault | None) -> None:
    if fault:
        raise fault.error


class FakeSeatHolds:
    """One event service: seat holds (no TTL; `lapse` plays one running out),
    sales with a fence per seat, and the sold seats of each booking."""

    def __init__(self) -> None:
        self.events: dict[str, EventSnapshot] = {}
        self.holders: dict[tuple[str, str], str] = {}  # (event, seat) -> owner
        self.sold: dict[tuple[str, str], uuid.UUID] = {}  # (event, seat) -> booking
        self.fences: dict[tuple[str, str], int] = defaultdict(int)
        self.prices = dict(PRICES)  # seat id prefix -> (tier, price in minor units)
        self.faults = Faults()
        self.calls: list[str] = []
        self._tokens = itertools.count(1)
        self.user_holds: dict[
            str, tuple[str, str, tuple[str, ...]]
        ] = {}  # id -> user, event, seats
        self.claimed: dict[str, uuid.UUID] = {}  # hold id -> booking

    def add_event(self, starts_in: timedelta = timedelta(days=30)) -> str:
        event_id = uuid.uuid4()
        self.events[str(event_id)] = EventSnapshot(
            event_id, "Fake night", "Fake hall", datetime.now(UTC) + starts_in
        )
        return str(event_id)

    def add_hold(self, event_id: str, seat_ids: Sequence[str], user_id: str) -> str:
        """A hold the user made with CreateHold; its id."""
        hold_id = str(uuid.uuid4())
        for seat in seat_ids:
            self.holders[(event_id, seat)] = f"hold:{hold_id}"
        self.user_holds[hold_id] = (user_id, event_id, tuple(seat_ids))
        return hold_id

    async def claim(self, hold_id: str, user_id: uuid.UUID, booking_id: uuid.UUID) -> Hold:
        self.calls.append("claim")
        found = self.user_holds.get(hold_id)
        if found is None or found[0] != str(user_id):
            raise NotFound("HOLD_NOT_FOUND", f"hold {hold_id!r} not found")
        _, event_id, seats = found
        if self.claimed.setdefault(hold_id, booking_id) != booking_id:
            raise FailedPrecondition("HOLD_USED", "the hold was already bought")
        owner = f"hold:{hold_id}"
        if any(self.holders.get((event_id, s)) != owner for s in seats):
            raise FailedPrecondition("HOLD_EXPIRED", "the hold has expired")
        return Hold(
            owner,
            next(self._tokens),
            datetime.now(UTC) + timedelta(minutes=5),
            tuple(self._held_seat(s) for s in seats),
            self.events[event_id],
        )

    def lapse(self, event_id: str, seat_ids: Sequence[str]) -> None:
        """The holds on these seats run out."""
        for seat in seat_ids:
            self.holders.pop((event_id, seat), None)

    async def hold(
        self, event_id: str, seat_ids: Sequence[str], owner: str, ttl_seconds: int
    ) -> Hold:
        self.calls.append("hold")
        fault = self.faults.take("hold")
        event = self.events.get(event_id)
        if event is None:
            raise not_found("event", event_id)
        taken = [
            s
            for s in seat_ids
            if (event_id, s) in self.sold or self.holders.get((event_id, s), owner) != owner
        ]
        if taken:
            raise Conflict(
                "SEAT_UNAVAILABLE",
                f"seats not available: {', '.join(taken)}",
                {"seat_ids": ",".join(taken)},
            )
        for seat in seat_ids:
            self.holders[(event_id, seat)] = owner
        hold = Hold(
            owner,
            next(self._tokens),
            datetime.now(UTC) + timedelta(seconds=ttl_seconds),
            tuple(self._held_seat(s) for s in seat_ids),
            event,
        )
        raise_after(fault)
        return hold

    async def release(self, event_id: str, seat_ids: Sequence[str], owner_token: str) -> None:
        self.calls.append("release")
        fault = self.faults.take("release")
        for seat in seat_ids:
            if self.holders.get((event_id, seat)) == owner_token:
                del self.holders[(event_id, seat)]
        raise_after(fault)

    async def confirm(
        self,
        event_id: str,
        seat_ids: Sequence[str],
        owner_token: str,
        fencing_token: int,
        booking_id: uuid.UUID,
    ) -> None:
        self.calls.append("confirm")
        fault = self.faults.take("confirm")
        keys = [(event_id, s) for s in seat_ids]
        if all(self.sold.get(k) == booking_id for k in keys):
            raise_after(fault)
            return  # a retry of a sale that went through
        lost = [k[1] for k in keys if self.holders.get(k) != owner_token]
        if lost:
            raise FailedPrecondition("HOLD_EXPIRED", f"seats not available: {', '.join(lost)}")
        if any(k in self.sold or self.fences[k] >= fencing_token for k in keys):
            raise FailedPrecondition("SEAT_UNAVAILABLE", "seats not available")
        for key in keys:
            self.sold[key] = booking_id
            self.fences[key] = fencing_token
            del self.holders[key]
        raise_after(fault)

    async def return_seats(self, event_id: str, booking_id: uuid.UUID) -> None:
        self.calls.append("return_seats")
        fault = self.faults.take("return_seats")
        for key in [k for k, b in self.sold.items() if k[0] == event_id and b == booking_id]:
            del self.sold[key]
        raise_after(fault)

    def _held_seat(self, seat_id: str) -> HeldSeat:
        tier, price = self.prices[seat_id.split("-")[0]]
        return HeldSeat(seat_id, tier, price, "USD")

    def held_by(self, owner: str) -> set[str]:
        return {seat for (_, seat), who in self.holders.items() if who == owner}

    def sold_to(self, booking_id: uuid.UUID) -> set[str]:
        return {seat for (_, seat), b in self.sold.items() if b == booking_id}


@dataclass
class _Charge:
    payment: Payment
    user_id: uuid.UUID
    amount_minor: int


class FakePayments:
    """The simulated processor: the test cards' outcomes, one payment per key."""

    def __init__(self) -> None:
        self.by_key: dict[str, _Charge] = {}
        self.refund_keys: set[str] = set()
        self.faults = Faults()
        self.charge_calls = 0
        # While set and not yet set free, a charge waits here (a slow processor).
        self.gate: asyncio.Event | None = None
        self.charging = asyncio.Event()  # set once a charge has begun

    async def charge(
        self,
        idempotency_key: str,
        user_id: uuid.UUID,
        amount_minor: int,
        currency: str,
        card: Card,
        reference: str,
    ) -> Payment:
        self.charge_calls += 1
        self.charging.set()
        if self.gate is not None:
            await self.gate.wait()
        fault = self.faults.take("charge")
        if not card.number.isdigit():
            raise Invalid(
                "INVALID_ARGUMENT", "payment_method.card_number: must contain only digits"
            )
        if idempotency_key not in self.by_key:
            decline = DECLINES.get(card.number, "")
            state = PaymentState.DECLINED if decline else PaymentState.SUCCEEDED
            self.by_key[idempotency_key] = _Charge(
                Payment(uuid.uuid4(), state, decline), user_id, amount_minor
            )
        raise_after(fault)
        return self.by_key[idempotency_key].payment

    async def refund(self, payment_id: uuid.UUID, idempotency_key: str) -> Payment:
        fault = self.faults.take("refund")
        [charge] = [c for c in self.by_key.values() if c.payment.payment_id == payment_id]
        if charge.payment.state is PaymentState.SUCCEEDED:
            charge.payment = dataclasses.replace(
                charge.payment, state=PaymentState.REFUNDED, refunded_minor=charge.amount_minor
            )
        self.refund_keys.add(idempotency_key)
        raise_after(fault)
        return charge.payment

    async def look_up(self, idempotency_key: str) -> Payment | None:
        self.faults.take("look_up")
        found = self.by_key.get(idempotency_key)
        return found.payment if found else None

    def payment_for(self, booking_id: uuid.UUID) -> Payment | None:
        found = self.by_key.get(str(booking_id))
        return found.payment if found else None


class FakeLedger:
    """The bookings and the outbox they settle with, in memory."""

    def __init__(self) -> None:
        self.bookings: dict[uuid.UUID, Booking] = {}
        self.cancel_requested: set[uuid.UUID] = set()
        self.outbox: list[Announcement] = []
        self.reads = 0

    async def add(self, booking: Booking) -> bool:
        if booking.booking_id in self.bookings:
            return False
        self.bookings[booking.booking_id] = booking
        return True

    async def get(self, booking_id: uuid.UUID) -> Booking | None:
        self.reads += 1
        return self.bookings.get(booking_id)

    async def settle(self, announcement: Announcement, from_state: State) -> bool:
        settled = announcement.booking
        current = self.bookings.get(settled.booking_id)
        if current is None or current.state is not from_state:
            return False
        self.bookings[settled.booking_id] = dataclasses.replace(
            current,
            state=settled.state,
            payment_id=settled.payment_id,
            failure_reason=settled.failure_reason,
            update_time=settled.update_time,
        )
        self.outbox.append(announcement)
        return True

    async def lease(self, booking_id: uuid.UUID, seen_update_time: datetime) -> Booking | None:
        booking = self.bookings.get(booking_id)
        if booking is None or booking.state is not State.PENDING:
            return None
        if booking.update_time != seen_update_time:
            return None
        self._touch(booking_id)
        return self.bookings[booking_id]

    async def update_hold(self, booking_id: uuid.UUID, fencing_token: int) -> None:
        self._touch(booking_id, fencing_token=fencing_token)

    async def request_cancel(self, booking_id: uuid.UUID) -> None:
        if booking_id not in self.cancel_requested:
            self.cancel_requested.add(booking_id)
            self._touch(booking_id)

    async def delete_pending(self, booking_id: uuid.UUID) -> None:
        if self.bookings[booking_id].state is State.PENDING:
            del self.bookings[booking_id]

    async def page(
        self,
        user_id: uuid.UUID | None,
        state: State | None,
        limit: int,
        before: tuple[datetime, uuid.UUID] | None,
    ) -> list[Booking]:
        found = sorted(
            (
                b
                for b in self.bookings.values()
                if (user_id is None or b.user_id == user_id)
                and (state is None or b.state is state)
                and (before is None or (b.create_time, b.booking_id) < before)
            ),
            key=lambda b: (b.create_time, b.booking_id),
            reverse=True,
        )
        return found[:limit]

    async def claim_unsettled(self, older_than_seconds: float, limit: int) -> list[Booking]:
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        claimed = [
            b
            for b in sorted(self.bookings.values(), key=lambda b: b.update_time)
            if (
                b.state is State.PENDING
                or (b.booking_id in self.cancel_requested and b.state is State.CONFIRMED)
            )
            and b.update_time < cutoff
        ][:limit]
        for booking in claimed:
            self._touch(booking.booking_id)
        return [self.bookings[b.booking_id] for b in claimed]

    def age(self, booking_id: uuid.UUID, seconds: float) -> None:
        """Makes a booking look untouched for that long (as the sweep judges)."""
        booking = self.bookings[booking_id]
        self.bookings[booking_id] = dataclasses.replace(
            booking, update_time=booking.update_time - timedelta(seconds=seconds)
        )

    def announced(self) -> list[tuple[str, uuid.UUID]]:
        return [(type(a).__name__, a.booking.booking_id) for a in self.outbox]

    def _touch(self, booking_id: uuid.UUID, **changes: object) -> None:
        booking = self.bookings[booking_id]
        self.bookings[booking_id] = dataclasses.replace(
            booking, update_time=datetime.now(UTC), **changes
        )
