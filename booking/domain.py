"""Bookings, free of I/O: identity, states, totals, what may happen when, and
the announcements a settled booking makes (written to the outbox with it)."""

from __future__ import annotations

import dataclasses
import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from runtime.errors import FailedPrecondition, Violations
from runtime.rules import field_rules
from ticketing.booking.v1 import booking_pb2
from ticketing.event.v1 import event_pb2

_SEAT_IDS = field_rules(booking_pb2.CreateBookingRequest, "seat_ids")
MAX_SEATS = _SEAT_IDS.max_items
MAX_REQUEST_ID_LENGTH = field_rules(booking_pb2.CreateBookingRequest, "request_id").max_len
# Checked here too so a bad id never reaches a hold.
MAX_SEAT_ID_LENGTH = _SEAT_IDS.max_len
# The event service caps a seat's price; a total beyond this is an event priced
# before that rule, and must not overflow int64.
MAX_TOTAL_MINOR = MAX_SEATS * field_rules(event_pb2.EventTier, "price").lte
# Bookings are named by the user and their request id, so every retry of a
# request, even one racing the original, works on the same booking.
_BOOKING_NAMESPACE = uuid.UUID("5f1d3c2e-8a4b-4e0f-9d6a-2b7c1e9f4a30")

DECLINE_CODES = frozenset({"card_declined", "insufficient_funds"})


class State(enum.IntEnum):
    """Values match ticketing.booking.v1.BookingState."""

    PENDING = 1
    CONFIRMED = 2
    FAILED = 3
    CANCELLED = 4


@dataclass(frozen=True)
class BookedSeat:
    seat_id: str
    tier: int
    price_minor: int


@dataclass(frozen=True)
class EventSnapshot:
    """The event as it was when booked; a ticket does not change afterwards."""

    event_id: uuid.UUID
    title: str
    venue: str
    starts_at: datetime


@dataclass(frozen=True)
class Booking:
    booking_id: uuid.UUID
    user_id: uuid.UUID
    user_email: str
    request_id: str
    event: EventSnapshot
    seats: tuple[BookedSeat, ...]
    currency: str
    total_minor: int
    state: State
    owner_token: str
    fencing_token: int
    create_time: datetime
    update_time: datetime
    payment_id: uuid.UUID | None = None
    failure_reason: str = ""
    # Set when the booking goes because its event was cancelled: the organizer's reason.
    event_cancel_reason: str | None = None

    @property
    def seat_ids(self) -> list[str]:
        return [seat.seat_id for seat in self.seats]

    def settled(self, state: State, **changes: object) -> Booking:
        """The booking as it is once moved to `state` now."""
        return dataclasses.replace(self, state=state, update_time=datetime.now(UTC), **changes)


@dataclass(frozen=True)
class Confirmed:
    """Paid and sold: the buyer gets the tickets."""

    booking: Booking


@dataclass(frozen=True)
class Failed:
    """Not sold, and no money kept."""

    booking: Booking


@dataclass(frozen=True)
class Cancelled:
    """Refunded and the seats given back."""

    booking: Booking
    refunded_minor: int


Announcement = Confirmed | Failed | Cancelled


@dataclass(frozen=True)
class CheckIn:
    """A ticket admitted at the door (announced to the event's sales report)."""

    booking: Booking
    seat: BookedSeat
    by: uuid.UUID
    time: datetime


def booking_id_for(user_id: str, request_id: str) -> uuid.UUID:
    if not request_id:
        return uuid.uuid4()
    return uuid.uuid5(_BOOKING_NAMESPACE, f"{user_id}/{request_id}")


def check_request(
    event_id: str,
    seat_ids: Sequence[str],
    has_payment_method: bool,
    request_id: str,
    hold_id: str = "",
) -> None:
    """What booking can check alone; the event and payment services check the rest."""
    problems = Violations()
    for name, value in (("event_id", event_id), ("hold_id", hold_id)):
        if value:
            try:
                uuid.UUID(value)
            except ValueError:
                problems.add(name, "is not a valid id")
    if not event_id and not hold_id:
        problems.add("event_id", "is required (or buy a hold with hold_id)")
    if hold_id:
        if seat_ids:
            problems.add("seat_ids", "must be empty with hold_id: the hold says which seats")
    elif not seat_ids:
        problems.add("seat_ids", "at least one seat is required")
    elif len(seat_ids) > MAX_SEATS:
        problems.add("seat_ids", f"at most {MAX_SEATS} seats per booking")
    else:
        for i, seat_id in enumerate(seat_ids):
            if not seat_id.strip():
                problems.add(f"seat_ids[{i}]", "is required")
            elif len(seat_id) > MAX_SEAT_ID_LENGTH:
                problems.add(f"seat_ids[{i}]", f"must be at most {MAX_SEAT_ID_LENGTH} characters")
    if not has_payment_method:
        problems.add("payment_method", "is required")
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        problems.add("request_id", f"must be at most {MAX_REQUEST_ID_LENGTH} characters")
    problems.raise_if_any()


def total(seats: Sequence[BookedSeat]) -> int:
    return sum(seat.price_minor for seat in seats)


def failure_error(booking: Booking) -> FailedPrecondition:
    """The error a FAILED booking answers with, first time and on every retry."""
    metadata = {"booking_id": str(booking.booking_id), "failure_reason": booking.failure_reason}
    if booking.failure_reason in DECLINE_CODES:
        return FailedPrecondition(
            "PAYMENT_DECLINED",
            f"the payment was declined ({booking.failure_reason})",
            metadata,
        )
    return FailedPrecondition(
        "BOOKING_FAILED",
        f"the booking failed ({booking.failure_reason})",
        metadata,
    )


def check_cancellable(booking: Booking, now: datetime) -> None:
    if booking.state is not State.CONFIRMED:
        raise FailedPrecondition(
            "BOOKING_NOT_CANCELLABLE",
            f"only confirmed bookings can be cancelled; this one is {booking.state.name}",
            {"booking_id": str(booking.booking_id), "state": booking.state.name},
        )
    if booking.event.starts_at <= now:
        raise FailedPrecondition(
            "EVENT_STARTED",
            "the event has started; bookings can no longer be cancelled",
            {"booking_id": str(booking.booking_id)},
        )


def request_id_reused(existing: Booking) -> FailedPrecondition:
    return FailedPrecondition(
        "REQUEST_ID_REUSED",
        "this request_id was used for another booking",
        {"booking_id": str(existing.booking_id)},
    )
