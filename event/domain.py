"""Seat maps, free of I/O: tiers, seat ids, and what a valid event is.

A seat id is `<tier>-<row>-<number>`, lowercase and 1-based (`vip-1-4`).
On input the tier is case-insensitive and `normal` means `standard`. This
module is the one place seat ids are parsed.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from runtime.currencies import is_currency
from runtime.errors import FailedPrecondition, FieldViolation, Violations, excerpt
from runtime.rules import field_rules
from ticketing.event.v1 import event_pb2

# The per-field limits are declared in event.proto (and so in the OpenAPI document).
_SEAT_IDS = field_rules(event_pb2.LockSeatRequest, "seat_ids")
MAX_SEATS_PER_HOLD = _SEAT_IDS.max_items
MAX_SEAT_ID_LENGTH = _SEAT_IDS.max_len
MAX_EVENT_CAPACITY = 100_000
MAX_ROWS = field_rules(event_pb2.EventTier, "rows").lte
MAX_SEATS_PER_ROW = field_rules(event_pb2.EventTier, "seats_per_row").lte
MAX_TITLE_LENGTH = field_rules(event_pb2.Event, "title").max_len
MAX_VENUE_LENGTH = field_rules(event_pb2.Event, "venue").max_len
MAX_DESCRIPTION_LENGTH = field_rules(event_pb2.Event, "description").max_len
MAX_QUERY_LENGTH = field_rules(event_pb2.ListEventsRequest, "query").max_len
MAX_CANCEL_REASON_LENGTH = field_rules(event_pb2.CancelEventRequest, "reason").max_len
ORGANIZER_ID = re.compile(field_rules(event_pb2.ListEventsRequest, "organizer_id").pattern)
# A price in minor units: 10^12 is ten billion in a two-decimal currency, and a
# hold's total (MAX_SEATS_PER_HOLD seats) stays far inside int64.
MAX_PRICE_MINOR = field_rules(event_pb2.EventTier, "price").lte
# Events are sold up to this far ahead; a start in year 9999 is a typo.
MAX_EVENT_HORIZON = timedelta(days=5 * 366)


class Tier(enum.IntEnum):
    """Values match ticketing.event.v1.Tier; the order is the seat-map order."""

    STANDARD = 1
    VIP = 2
    VVIP = 3

    @property
    def slug(self) -> str:
        return self.name.lower()


_TIER_ALIASES = {tier.slug: tier for tier in Tier} | {"normal": Tier.STANDARD}
_SEAT_ID = re.compile(r"^([a-z]+)-([1-9][0-9]{0,5})-([1-9][0-9]{0,5})$")


@dataclass(frozen=True, order=True)
class SeatRef:
    """A seat's place in the map; orders in seat-map order."""

    tier: Tier
    row: int
    number: int

    @property
    def seat_id(self) -> str:
        return f"{self.tier.slug}-{self.row}-{self.number}"


def parse_seat_id(raw: str) -> SeatRef | None:
    """The seat an id names, or None if it is not a seat id at all."""
    match = _SEAT_ID.match(raw.strip().lower())
    if not match or match.group(1) not in _TIER_ALIASES:
        return None
    return SeatRef(_TIER_ALIASES[match.group(1)], int(match.group(2)), int(match.group(3)))


@dataclass(frozen=True)
class TierPlan:
    tier: Tier
    price_minor: int
    currency: str
    rows: int
    seats_per_row: int

    @property
    def capacity(self) -> int:
        return self.rows * self.seats_per_row

    @property
    def shape(self) -> tuple[Tier, int, int]:
        """What the seats of the tier are made of (the price is not)."""
        return self.tier, self.rows, self.seats_per_row

    def contains(self, seat: SeatRef) -> bool:
        return (
            seat.tier is self.tier and seat.row <= self.rows and seat.number <= self.seats_per_row
        )


class EventState(enum.IntEnum):
    """Values match ticketing.event.v1.EventState."""

    DRAFT = 1
    PUBLISHED = 2
    CANCELLED = 3


@dataclass(frozen=True)
class Cancellation:
    """A cancelled event's refunds, as far as the booking service reported them."""

    reason: str
    cancel_time: datetime
    bookings_total: int = 0
    bookings_refunded: int = 0
    finish_time: datetime | None = None


@dataclass(frozen=True)
class EventInfo:
    """An event as its organizer made it, at one version."""

    event_id: uuid.UUID
    title: str
    description: str
    venue: str
    starts_at: datetime
    organizer_id: uuid.UUID
    create_time: datetime
    tiers: tuple[TierPlan, ...]
    state: EventState = EventState.PUBLISHED
    sale_start_time: datetime | None = None
    sale_end_time: datetime | None = None
    version: int = 1
    update_time: datetime | None = None
    cancellation: Cancellation | None = None
    # Seats one user may hold and own at once for this event; 0: no limit.
    max_tickets_per_user: int = 0

    @property
    def etag(self) -> str:
        return f'"{self.version}"'

    def visible_to(self, user_id: str | None, is_admin: bool) -> bool:
        """Drafts are their organizer's and the admins' only."""
        return self.state is not EventState.DRAFT or is_admin or user_id == str(self.organizer_id)

    def tier(self, tier: Tier) -> TierPlan | None:
        return next((plan for plan in self.tiers if plan.tier is tier), None)

    def plan_for(self, seat: SeatRef) -> TierPlan:
        """The tier of a seat already checked against this event."""
        plan = self.tier(seat.tier)
        if plan is None:
            raise KeyError(f"event {self.event_id} has no {seat.tier.slug} tier")
        return plan

    @property
    def currency(self) -> str:
        return self.tiers[0].currency


@dataclass(frozen=True)
class EventSearch:
    """ListEvents' filters; None (or empty) filters nothing."""

    include_started: bool = False
    organizer_id: str | None = None
    starts_after: datetime | None = None
    starts_before: datetime | None = None
    state: EventState | None = None
    query: str = ""


@dataclass(frozen=True)
class EventChanges:
    """An update's new values; only those its mask names are read."""

    title: str = ""
    description: str = ""
    venue: str = ""
    starts_at: datetime | None = None
    sale_start_time: datetime | None = None
    sale_end_time: datetime | None = None
    tiers: tuple[TierPlan, ...] = ()
    max_tickets_per_user: int = 0


def check_new_event(
    title: str,
    venue: str,
    starts_at: datetime | None,
    description: str,
    tiers: Sequence[TierPlan],
    now: datetime,
    sale_start_time: datetime | None = None,
    sale_end_time: datetime | None = None,
) -> None:
    """Raises INVALID_ARGUMENT naming every problem with a new event (or an
    event as an update would leave it)."""
    problems = Violations()
    _check_sale_window(problems, starts_at, sale_start_time, sale_end_time)
    if not title.strip():
        problems.add("event.title", "is required")
    elif len(title) > MAX_TITLE_LENGTH:
        problems.add("event.title", f"must be at most {MAX_TITLE_LENGTH} characters")
    if not venue.strip():
        problems.add("event.venue", "is required")
    elif len(venue) > MAX_VENUE_LENGTH:
        problems.add("event.venue", f"must be at most {MAX_VENUE_LENGTH} characters")
    if len(description) > MAX_DESCRIPTION_LENGTH:
        problems.add("event.description", f"must be at most {MAX_DESCRIPTION_LENGTH} characters")
    if starts_at is None:
        problems.add("event.starts_at", "is required")
    elif starts_at <= now:
        problems.add("event.starts_at", "must be in the future")
    elif starts_at > now + MAX_EVENT_HORIZON:
        problems.add("event.starts_at", f"must be within {MAX_EVENT_HORIZON.days} days from now")
    if not tiers:
        problems.add("event.tiers", "at least one tier is required")
    seen: set[Tier] = set()
    for i, plan in enumerate(tiers):
        field = f"event.tiers[{i}]"
        if plan.tier in seen:
            problems.add(f"{field}.tier", f"{plan.tier.name} appears more than once")
        seen.add(plan.tier)
        if not is_currency(plan.currency):
            problems.add(
                f"{field}.price.currency_code",
                "must be an active ISO-4217 currency code, like USD or EUR",
            )
        elif plan.currency != tiers[0].currency:
            problems.add(f"{field}.price.currency_code", "all tiers must share one currency")
        # A free seat would still go through Charge, which takes no zero amounts.
        if not 1 <= plan.price_minor <= MAX_PRICE_MINOR:
            problems.add(f"{field}.price.amount_minor", f"must be between 1 and {MAX_PRICE_MINOR}")
        if not 1 <= plan.rows <= MAX_ROWS:
            problems.add(f"{field}.rows", f"must be between 1 and {MAX_ROWS}")
        if not 1 <= plan.seats_per_row <= MAX_SEATS_PER_ROW:
            problems.add(f"{field}.seats_per_row", f"must be between 1 and {MAX_SEATS_PER_ROW}")
    capacity = sum(plan.capacity for plan in tiers)
    if capacity > MAX_EVENT_CAPACITY:
        problems.add("event.tiers", f"at most {MAX_EVENT_CAPACITY} seats in all, not {capacity}")
    problems.raise_if_any()


def _check_sale_window(
    problems: Violations,
    starts_at: datetime | None,
    sale_start_time: datetime | None,
    sale_end_time: datetime | None,
) -> None:
    if sale_start_time and sale_end_time and sale_start_time >= sale_end_time:
        problems.add("event.sale_end_time", "must be after sale_start_time")
    if starts_at is None:
        return
    if sale_start_time and sale_start_time >= starts_at:
        problems.add("event.sale_start_time", "must be before the event starts")
    if sale_end_time and sale_end_time > starts_at:
        problems.add("event.sale_end_time", "must be no later than the event starts")


def check_on_sale(event: EventInfo, now: datetime) -> None:
    """Raises FAILED_PRECONDITION unless the event's seats may be held now."""
    ident = {"event_id": str(event.event_id)}
    if event.state is EventState.CANCELLED:
        raise FailedPrecondition("EVENT_CANCELLED", "the event is cancelled", ident)
    if event.state is EventState.DRAFT:
        raise FailedPrecondition("EVENT_NOT_PUBLISHED", "the event is not on sale yet", ident)
    if event.starts_at <= now:
        raise FailedPrecondition(
            "EVENT_STARTED", "the event has started; its seats are no longer on sale", ident
        )
    if event.sale_start_time and now < event.sale_start_time:
        raise FailedPrecondition(
            "SALE_NOT_OPEN",
            f"sales open at {event.sale_start_time.isoformat()}",
            {**ident, "sale_start_time": event.sale_start_time.isoformat()},
        )
    if event.sale_end_time and now >= event.sale_end_time:
        raise FailedPrecondition(
            "SALE_ENDED",
            f"sales ended at {event.sale_end_time.isoformat()}",
            {**ident, "sale_end_time": event.sale_end_time.isoformat()},
        )


def check_changeable(event: EventInfo, now: datetime) -> None:
    """An event may be edited, published or cancelled until it starts, unless
    it is cancelled."""
    ident = {"event_id": str(event.event_id)}
    if event.state is EventState.CANCELLED:
        raise FailedPrecondition("EVENT_CANCELLED", "the event is cancelled", ident)
    if event.starts_at <= now:
        raise FailedPrecondition("EVENT_STARTED", "the event has started", ident)


# The fields an update mask may name (AIP-134), as event.proto's pattern for
# UpdateEventRequest.update_mask lists them: "^(title|description|...)(,(...))*$".
UPDATABLE_FIELDS = tuple(
    re.match(r"\^\(([a-z_|]+)\)", field_rules(event_pb2.UpdateEventRequest, "update_mask").pattern)
    .group(1)  # type: ignore[union-attr]
    .split("|")
)


def check_update_mask(paths: Sequence[str]) -> list[str]:
    """The mask's fields, or INVALID_ARGUMENT naming the ones no update may change."""
    problems = Violations()
    if not paths:
        problems.add("update_mask", f"name at least one of {', '.join(UPDATABLE_FIELDS)}")
    for path in paths:
        if path not in UPDATABLE_FIELDS:
            problems.add(
                "update_mask",
                f"{excerpt(path)} cannot be updated; the fields that can: "
                f"{', '.join(UPDATABLE_FIELDS)}",
            )
    problems.raise_if_any()
    return list(dict.fromkeys(paths))


def check_tier_change(current: EventInfo, tiers: Sequence[TierPlan]) -> None:
    """A published event keeps its seat map (its seats may be held or sold):
    only prices change. FAILED_PRECONDITION naming the field, since the same
    request is fine for a draft."""
    if current.state is EventState.DRAFT:
        return
    problems: list[FieldViolation] = []
    if sorted(p.shape for p in tiers) != [p.shape for p in current.tiers]:
        problems.append(
            FieldViolation(
                "event.tiers",
                "the seat map of a published event cannot change; send its tiers, "
                "rows and seats_per_row as they are, with new prices",
            )
        )
    if any(p.currency != current.currency for p in tiers):
        problems.append(FieldViolation("event.tiers", f"prices stay in {current.currency}"))
    if problems:
        raise FailedPrecondition(
            "SEAT_MAP_FIXED",
            "; ".join(p.description for p in problems),
            {"event_id": str(current.event_id)},
            tuple(problems),
        )


def check_seat_request(seat_ids: Iterable[str], event: EventInfo) -> list[SeatRef]:
    """The seats of a hold request: 1 to 10 distinct seats of the event's map."""
    problems = Violations()
    seats: list[SeatRef] = []
    raw_ids = list(seat_ids)
    if not raw_ids:
        problems.add("seat_ids", "at least one seat is required")
    elif len(raw_ids) > MAX_SEATS_PER_HOLD:
        problems.add("seat_ids", f"at most {MAX_SEATS_PER_HOLD} seats at a time")
        problems.raise_if_any()  # not one violation per seat of a request this wrong
    for i, raw in enumerate(raw_ids):
        if len(raw) > MAX_SEAT_ID_LENGTH:
            problems.add(f"seat_ids[{i}]", f"must be at most {MAX_SEAT_ID_LENGTH} characters")
            continue
        seat = parse_seat_id(raw)
        if seat is None:
            problems.add(f"seat_ids[{i}]", f"{excerpt(raw)} is not a seat id like 'vip-1-4'")
            continue
        plan = event.tier(seat.tier)
        if plan is None:
            problems.add(f"seat_ids[{i}]", f"{raw!r}: the event has no {seat.tier.slug} tier")
        elif not plan.contains(seat):
            problems.add(
                f"seat_ids[{i}]",
                f"{raw!r} is outside the {seat.tier.slug} tier "
                f"({plan.rows} rows of {plan.seats_per_row})",
            )
        elif seat in seats:
            problems.add(f"seat_ids[{i}]", f"{raw!r} is requested twice")
        else:
            seats.append(seat)
    problems.raise_if_any()
    return seats
