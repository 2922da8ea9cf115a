"""The event database: events, tiers with their sold counters, seats, and
the sales ledger whose unique index makes a second sale of a seat impossible."""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from psycopg import errors as pg_errors
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from event.domain import (
    Cancellation,
    EventInfo,
    EventSearch,
    EventState,
    SeatRef,
    Tier,
    TierPlan,
)
from runtime import timestamps
from runtime.consumer import processed_messages_table
from runtime.errors import FailedPrecondition
from runtime.outbox import enqueue, outbox_table
from runtime.pg import Database
from ticketing.event.v1 import event_pb2
from ticketing.event.v1 import messages_pb2 as event_messages_pb2

metadata = sa.MetaData()

AVAILABLE, SOLD = "AVAILABLE", "SOLD"

events = sa.Table(
    "events",
    metadata,
    sa.Column("event_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("venue", sa.Text, nullable=False),
    sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("organizer_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("state", sa.SmallInteger, nullable=False, server_default="2"),
    sa.Column("sale_start_time", sa.DateTime(timezone=True)),
    sa.Column("sale_end_time", sa.DateTime(timezone=True)),
    # Moves with every change; the etag is made of it.
    sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    # Set by CancelEvent; the counts as the booking service reports its refunds.
    sa.Column("cancel_reason", sa.Text),
    sa.Column("cancel_time", sa.DateTime(timezone=True)),
    sa.Column("cancel_bookings_total", sa.Integer),
    sa.Column("cancel_bookings_refunded", sa.Integer),
    sa.Column("cancel_finish_time", sa.DateTime(timezone=True)),
    sa.CheckConstraint("state IN (1, 2, 3)", name="event_state_valid"),
    sa.Column("max_tickets_per_user", sa.Integer, nullable=False, server_default="0"),
    sa.Index("events_by_start", "starts_at", "event_id"),
    # ListEvents' filters (event migration 0006): an organizer's events, the
    # events in a state, and title or venue text (trigrams serve ILIKE '%...%').
    sa.Index("events_by_organizer", "organizer_id", "starts_at", "event_id"),
    sa.Index("events_by_state", "state", "starts_at", "event_id"),
    sa.Index(
        "events_title_trigrams",
        "title",
        postgresql_using="gin",
        postgresql_ops={"title": "gin_trgm_ops"},
    ),
    sa.Index(
        "events_venue_trigrams",
        "venue",
        postgresql_using="gin",
        postgresql_ops={"venue": "gin_trgm_ops"},
    ),
)

event_tiers = sa.Table(
    "event_tiers",
    metadata,
    sa.Column(
        "event_id", pg.UUID(as_uuid=True), sa.ForeignKey("events.event_id"), primary_key=True
    ),
    sa.Column("tier", sa.SmallInteger, primary_key=True),
    sa.Column("price_minor", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("seats_per_row", sa.Integer, nullable=False),
    # Moved in the same transaction as the seats, so availability is O(1).
    sa.Column("sold", sa.Integer, nullable=False, server_default="0"),
    sa.CheckConstraint("sold >= 0 AND sold <= rows * seats_per_row", name="tier_sold_in_range"),
)

seats = sa.Table(
    "seats",
    metadata,
    sa.Column("event_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("tier", sa.SmallInteger, primary_key=True),
    sa.Column("row", sa.Integer, primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True),
    sa.Column("status", sa.Text, nullable=False, server_default=AVAILABLE),
    sa.Column("booking_id", pg.UUID(as_uuid=True)),
    # Whose the seat is once sold (when the hold named its user): Redis's
    # per-user ticket counts are rebuilt from it after Redis loses its data.
    sa.Column("buyer_id", pg.UUID(as_uuid=True)),
    # The highest fencing token that ever sold this seat: a stale holder
    # (smaller token) can never sell it again.
    sa.Column("fence", sa.BigInteger, nullable=False, server_default="0"),
    sa.ForeignKeyConstraint(["event_id", "tier"], ["event_tiers.event_id", "event_tiers.tier"]),
    sa.CheckConstraint("status IN ('AVAILABLE', 'SOLD')", name="seat_status_valid"),
    sa.Index("seats_by_booking", "booking_id", postgresql_where=sa.text("booking_id IS NOT NULL")),
)

seat_sales = sa.Table(
    "seat_sales",
    metadata,
    sa.Column("sale_id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("event_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("tier", sa.SmallInteger, nullable=False),
    sa.Column("row", sa.Integer, nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("booking_id", pg.UUID(as_uuid=True), nullable=False, index=True),
    sa.Column("fence", sa.BigInteger, nullable=False),
    sa.Column(
        "sold_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("returned_time", sa.DateTime(timezone=True)),
    # At most one live sale per seat, whatever Redis says.
    sa.Index(
        "one_live_sale_per_seat",
        "event_id",
        "tier",
        "row",
        "number",
        unique=True,
        postgresql_where=sa.text("returned_time IS NULL"),
    ),
)

# A fencing token is epoch * FENCE_EPOCH + the Redis counter (event.holds):
# the epoch moves on here, durably, every time Redis's view of the event is
# rebuilt, so a token is larger than every token handed out before it, even
# when Redis forgot them all.
event_fences = sa.Table(
    "event_fences",
    metadata,
    sa.Column(
        "event_id", pg.UUID(as_uuid=True), sa.ForeignKey("events.event_id"), primary_key=True
    ),
    sa.Column("epoch", sa.BigInteger, nullable=False),
)
FENCE_EPOCH = 2**32  # holds per event and epoch before tokens would overlap the next
# Sold seats a call of a rebuild writes to Redis (about 60 bytes each): Redis
# runs one call at a time, so other events' holds wait for a call, never for
# a whole 100,000-seat rebuild.
MARKERS_PER_TEXT = 5_000

_SEAT_KEY = (seats.c.tier, seats.c.row, seats.c.number)


def _seat(row: sa.Row) -> SeatRef:
    return SeatRef(Tier(row.tier), row.row, row.number)


def _in(seat_list: Sequence[SeatRef]) -> sa.ColumnElement[bool]:
    return sa.tuple_(*_SEAT_KEY).in_([(s.tier.value, s.row, s.number) for s in seat_list])


def _cancellation(row: sa.Row) -> Cancellation | None:
    if row.cancel_time is None:
        return None
    return Cancellation(
        row.cancel_reason or "",
        row.cancel_time,
        row.cancel_bookings_total or 0,
        row.cancel_bookings_refunded or 0,
        row.cancel_finish_time,
    )


class Catalog:
    """Queries on one connection, inside the caller's transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add_event(self, event: EventInfo) -> None:
        await self._conn.execute(
            events.insert().values(
                event_id=event.event_id,
                title=event.title,
                description=event.description,
                venue=event.venue,
                starts_at=event.starts_at,
                organizer_id=event.organizer_id,
                create_time=event.create_time,
                state=event.state.value,
                sale_start_time=event.sale_start_time,
                sale_end_time=event.sale_end_time,
                version=event.version,
                update_time=event.update_time or event.create_time,
                max_tickets_per_user=event.max_tickets_per_user,
            )
        )
        await self._add_seat_map(event)

    async def _add_seat_map(self, event: EventInfo) -> None:
        await self._conn.execute(
            event_tiers.insert(),
            [
                {
                    "event_id": event.event_id,
                    "tier": p.tier.value,
                    "price_minor": p.price_minor,
                    "currency": p.currency,
                    "rows": p.rows,
                    "seats_per_row": p.seats_per_row,
                }
                for p in event.tiers
            ],
        )
        for plan in event.tiers:
            # One statement per tier, rows generated by the server: 100k seats in
            # well under a second, instead of 100k INSERTs.
            await self._conn.execute(
                sa.text(
                    "INSERT INTO seats (event_id, tier, row, number) "
                    "SELECT :event_id, :tier, r, n "
                    "FROM generate_series(1, :rows) r, generate_series(1, :per_row) n"
                ),
                {
                    "event_id": event.event_id,
                    "tier": plan.tier.value,
                    "rows": plan.rows,
                    "per_row": plan.seats_per_row,
                },
            )

    async def event(self, event_id: uuid.UUID, for_update: bool = False) -> EventInfo | None:
        found = await self._events(events.c.event_id == event_id, for_update=for_update)
        return found[0] if found else None

    async def update_event(self, before: EventInfo, after: EventInfo) -> bool:
        """Writes the event's new version if it is still at `before`'s; False if
        someone else changed it meanwhile."""
        changed = await self._conn.execute(
            events.update()
            .where(events.c.event_id == before.event_id, events.c.version == before.version)
            .values(
                title=after.title,
                description=after.description,
                venue=after.venue,
                starts_at=after.starts_at,
                state=after.state.value,
                sale_start_time=after.sale_start_time,
                sale_end_time=after.sale_end_time,
                max_tickets_per_user=after.max_tickets_per_user,
                version=after.version,
                update_time=after.update_time,
            )
        )
        if changed.rowcount != 1:
            return False
        if after.cancellation is not None and before.cancellation is None:
            await self._conn.execute(
                events.update()
                .where(events.c.event_id == after.event_id)
                .values(
                    cancel_reason=after.cancellation.reason,
                    cancel_time=after.cancellation.cancel_time,
                    cancel_bookings_total=0,
                    cancel_bookings_refunded=0,
                )
            )
        if after.tiers != before.tiers:
            if [p.shape for p in after.tiers] == [p.shape for p in before.tiers]:
                for plan in after.tiers:
                    await self._conn.execute(
                        event_tiers.update()
                        .where(
                            event_tiers.c.event_id == after.event_id,
                            event_tiers.c.tier == plan.tier.value,
                        )
                        .values(price_minor=plan.price_minor, currency=plan.currency)
                    )
            else:  # a draft's new seat map: nothing of it was ever held or sold
                await self._conn.execute(seats.delete().where(seats.c.event_id == after.event_id))
                await self._conn.execute(
                    event_tiers.delete().where(event_tiers.c.event_id == after.event_id)
                )
                await self._add_seat_map(after)
        return True

    async def events_page(
        self,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
        search: EventSearch,
        viewer: uuid.UUID | None,
        viewer_is_admin: bool,
    ) -> list[EventInfo]:
        """A page of the events the viewer may see that match the search, by start."""
        conditions: list[sa.ColumnElement[bool]] = []
        if after:
            conditions.append(sa.tuple_(events.c.starts_at, events.c.event_id) > after)
        if search.starts_after:
            conditions.append(events.c.starts_at >= search.starts_after)
        if search.starts_before:
            conditions.append(events.c.starts_at < search.starts_before)
        if search.organizer_id:
            conditions.append(events.c.organizer_id == uuid.UUID(search.organizer_id))
        if search.state is not None:
            conditions.append(events.c.state == search.state.value)
        if search.query:
            # ILIKE on each column, so that each one's trigram index serves it.
            pattern = "%" + re.sub(r"([\\%_])", r"\\\1", search.query) + "%"
            conditions.append(sa.or_(events.c.title.ilike(pattern), events.c.venue.ilike(pattern)))
        if not viewer_is_admin:
            visible = events.c.state != EventState.DRAFT.value
            if viewer is not None:
                visible = sa.or_(visible, events.c.organizer_id == viewer)
            conditions.append(visible)
        return await self._events(sa.and_(sa.true(), *conditions), limit)

    async def _events(
        self, condition: sa.ColumnElement[bool], limit: int = 1, for_update: bool = False
    ) -> list[EventInfo]:
        selected = (
            sa.select(events)
            .where(condition)
            .order_by(events.c.starts_at, events.c.event_id)
            .limit(limit)
        )
        if for_update:
            selected = selected.with_for_update()
        page = selected.subquery()
        rows = await self._conn.execute(
            sa.select(
                page,
                event_tiers.c.tier,
                event_tiers.c.price_minor,
                event_tiers.c.currency,
                event_tiers.c.rows,
                event_tiers.c.seats_per_row,
            )
            .join(event_tiers, event_tiers.c.event_id == page.c.event_id)
            .order_by(page.c.starts_at, page.c.event_id, event_tiers.c.tier)
        )
        found: dict[uuid.UUID, EventInfo] = {}
        for row in rows:
            plan = TierPlan(
                Tier(row.tier), row.price_minor, row.currency, row.rows, row.seats_per_row
            )
            known = found.get(row.event_id)
            found[row.event_id] = (
                EventInfo(
                    row.event_id,
                    row.title,
                    row.description,
                    row.venue,
                    row.starts_at,
                    row.organizer_id,
                    row.create_time,
                    (plan,),
                    state=EventState(row.state),
                    sale_start_time=row.sale_start_time,
                    sale_end_time=row.sale_end_time,
                    version=row.version,
                    update_time=row.update_time,
                    cancellation=_cancellation(row),
                    max_tickets_per_user=row.max_tickets_per_user,
                )
                if known is None
                else dataclasses.replace(known, tiers=(*known.tiers, plan))
            )
        return list(found.values())

    async def announce_cancelled(self, event: EventInfo) -> None:
        """Writes the event's `event.cancelled` message to the outbox, in the
        transaction that cancels it."""
        assert event.cancellation is not None
        message = event_messages_pb2.EventCancelled(
            event=event_pb2.EventSummary(
                event_id=str(event.event_id),
                title=event.title,
                venue=event.venue,
                starts_at=timestamps.to_proto(event.starts_at),
            ),
            organizer_id=str(event.organizer_id),
            reason=event.cancellation.reason,
            cancel_time=timestamps.to_proto(event.cancellation.cancel_time),
        )
        await enqueue(self._conn, outbox, "event.cancelled", message)

    async def record_refund_progress(
        self, event_id: uuid.UUID, total: int, refunded: int, finish_time: datetime | None
    ) -> bool:
        """Moves a cancelled event's refund counts on; both only grow, so a
        report that arrives late changes nothing. False if the event is unknown."""
        changed = await self._conn.execute(
            events.update()
            .where(events.c.event_id == event_id, events.c.cancel_time.is_not(None))
            .values(
                cancel_bookings_total=sa.func.greatest(
                    sa.func.coalesce(events.c.cancel_bookings_total, 0), total
                ),
                cancel_bookings_refunded=sa.func.greatest(
                    sa.func.coalesce(events.c.cancel_bookings_refunded, 0), refunded
                ),
                cancel_finish_time=sa.func.coalesce(events.c.cancel_finish_time, finish_time),
            )
        )
        return changed.rowcount == 1

    async def sold_to(self, event_id: uuid.UUID, booking_id: uuid.UUID) -> list[SeatRef]:
        rows = await self._conn.execute(
            sa.select(*_SEAT_KEY).where(
                seats.c.event_id == event_id,
                seats.c.booking_id == booking_id,
                seats.c.status == SOLD,
            )
        )
        return sorted(_seat(r) for r in rows)

    async def unsell(self, event_id: uuid.UUID, booking_id: uuid.UUID) -> list[SeatRef]:
        """Puts a booking's seats back on sale; returns every seat it ever bought."""
        returned = [
            _seat(r)
            for r in await self._conn.execute(
                seats.update()
                .where(
                    seats.c.event_id == event_id,
                    seats.c.booking_id == booking_id,
                    seats.c.status == SOLD,
                )
                .values(status=AVAILABLE, booking_id=None, buyer_id=None)
                .returning(*_SEAT_KEY)
            )
        ]
        await self._conn.execute(
            seat_sales.update()
            .where(
                seat_sales.c.event_id == event_id,
                seat_sales.c.booking_id == booking_id,
                seat_sales.c.returned_time.is_(None),
            )
            .values(returned_time=sa.func.now())
        )
        await self._move_counters(event_id, Counter(s.tier for s in returned), -1)
        ever = await self._conn.execute(
            sa.select(seat_sales.c.tier, seat_sales.c.row, seat_sales.c.number).where(
                seat_sales.c.event_id == event_id, seat_sales.c.booking_id == booking_id
            )
        )
        return sorted({_seat(r) for r in ever})

    async def _move_counters(self, event_id: uuid.UUID, by_tier: Counter[Tier], sign: int) -> None:
        # Always in tier order: two sales locking the same counters in opposite
        # orders would deadlock.
        for tier, count in sorted(by_tier.items()):
            await self._conn.execute(
                event_tiers.update()
                .where(event_tiers.c.event_id == event_id, event_tiers.c.tier == tier.value)
                .values(sold=event_tiers.c.sold + sign * count)
            )

    async def seats_page(
        self,
        event_id: uuid.UUID,
        tier: Tier | None,
        status: str | None,
        after: SeatRef | None,
        limit: int,
    ) -> list[tuple[SeatRef, bool]]:
        """(seat, sold) in seat-map order."""
        query = sa.select(*_SEAT_KEY, seats.c.status).where(seats.c.event_id == event_id)
        if tier is not None:
            query = query.where(seats.c.tier == tier.value)
        if status is not None:
            query = query.where(seats.c.status == status)
        if after is not None:
            query = query.where(sa.tuple_(*_SEAT_KEY) > (after.tier.value, after.row, after.number))
        rows = await self._conn.execute(query.order_by(*_SEAT_KEY).limit(limit))
        return [(_seat(r), r.status == SOLD) for r in rows]


sales = sa.Table(
    "sales",
    metadata,
    sa.Column("event_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("tier", sa.SmallInteger, primary_key=True),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("tickets_sold", sa.Integer, nullable=False, server_default="0"),
    sa.Column("tickets_refunded", sa.Integer, nullable=False, server_default="0"),
    sa.Column("gross_minor", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("refunded_minor", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column(
        "update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("tickets_checked_in", sa.Integer, nullable=False, server_default="0"),
)

processed_messages = processed_messages_table(metadata)
outbox = outbox_table(metadata)


@dataclasses.dataclass(frozen=True)
class SaleChange:
    """What one booking message does to one tier's line of the sales report."""

    message_id: str
    event_id: uuid.UUID
    tier: Tier
    currency: str
    sold: int
    refunded: int
    gross_minor: int
    refunded_minor: int
    checked_in: int = 0


@dataclasses.dataclass(frozen=True)
class TierSales:
    tier: Tier
    currency: str
    tickets_sold: int
    tickets_refunded: int
    gross_minor: int
    refunded_minor: int
    update_time: datetime
    checked_in: int


class SalesBook:
    """The sales report, as read by organizers (SalePath.record_sales moves it)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def report(self, event_id: uuid.UUID) -> list[TierSales]:
        rows = await self._conn.execute(
            sa.select(sales).where(sales.c.event_id == event_id).order_by(sales.c.tier)
        )
        return [
            TierSales(
                Tier(r.tier),
                r.currency,
                r.tickets_sold,
                r.tickets_refunded,
                r.gross_minor,
                r.refunded_minor,
                r.update_time,
                r.tickets_checked_in,
            )
            for r in rows
        ]


def _columns(seat_list: Sequence[SeatRef]) -> tuple[list[int], list[int], list[int]]:
    """Seats as the three arrays (tiers, rows, numbers) the statements unnest."""
    return (
        [s.tier.value for s in seat_list],
        [s.row for s in seat_list],
        [s.number for s in seat_list],
    )


# What sell_seats raises for an event not on sale (event migration 0007).
EVENT_NOT_ON_SALE = "TK001"
_SEATS_IN = "(tier, row, number) IN (SELECT * FROM unnest(%s::smallint[], %s::int[], %s::int[]))"


@dataclasses.dataclass(frozen=True)
class TierCounts:
    sold: int
    # From the sales report (booking's check-in messages), so it trails the scans.
    checked_in: int


class SalePath:
    """The statements a sale runs, each one round trip in autocommit (runtime.pg)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def sell(
        self,
        event_id: uuid.UUID,
        seat_list: Sequence[SeatRef],
        booking_id: uuid.UUID,
        fence: int,
        buyer: uuid.UUID | None,
    ) -> bool:
        """Sells every seat to the booking (and its buyer, when known), or
        (returning False) none of them; FailedPrecondition EVENT_CANCELLED once
        the event is cancelled."""
        try:
            row = await self._db.fetchone(
                "SELECT sell_seats(%s, %s::smallint[], %s::int[], %s::int[], %s, %s, %s::uuid)"
                " AS sold",
                (event_id, *_columns(seat_list), booking_id, fence, buyer),
            )
        except pg_errors.DatabaseError as error:
            if error.sqlstate != EVENT_NOT_ON_SALE:
                raise
            raise FailedPrecondition(
                "EVENT_CANCELLED", "the event is cancelled", {"event_id": str(event_id)}
            ) from error
        return bool(row and row.sold)

    async def unsold_after(
        self, event_id: uuid.UUID, tier: Tier, after: SeatRef | None, limit: int
    ) -> list[SeatRef]:
        """The tier's unsold seats in seat-map order, those after `after` (all
        if None): best-available's candidates, an index range of the key."""
        row, number = (after.row, after.number) if after else (0, 0)
        rows = await self._db.fetchall(
            "SELECT tier, row, number FROM seats WHERE event_id = %s AND tier = %s "
            "AND status = %s AND (row, number) > (%s, %s) ORDER BY row, number LIMIT %s",
            (event_id, tier.value, AVAILABLE, row, number, limit),
        )
        return [_seat(r) for r in rows]

    async def sold_among(self, event_id: uuid.UUID, seat_list: Sequence[SeatRef]) -> set[SeatRef]:
        rows = await self._db.fetchall(
            f"SELECT tier, row, number FROM seats WHERE event_id = %s AND status = 'SOLD' "
            f"AND {_SEATS_IN}",
            (event_id, *_columns(seat_list)),
        )
        return {_seat(r) for r in rows}

    async def next_fence_floor(self, event_id: uuid.UUID) -> int:
        """Starts the event's next fence epoch; every token from now on is above
        the floor returned, and so above every token ever handed out before."""
        row = await self._db.fetchone(
            "INSERT INTO event_fences AS f (event_id, epoch) VALUES (%s, 1) "
            "ON CONFLICT (event_id) DO UPDATE SET epoch = f.epoch + 1 RETURNING epoch",
            (event_id,),
        )
        assert row is not None
        return row.epoch * FENCE_EPOCH

    async def sold_markers(
        self, event_id: uuid.UUID, per_text: int = MARKERS_PER_TEXT
    ) -> list[str]:
        """Every sold seat of the event with the booking and the buyer ('-' when
        unknown) that bought it, as the hold store's rebuild takes them: texts
        of up to `per_text` "seat_id booking_id buyer_id" triples. PostgreSQL
        writes the texts; a row and two objects per seat took seconds for
        60,000 sold seats, with every hold waiting."""
        rows = await self._db.fetchall(
            """
            SELECT string_agg((%s::text[])[tier] || '-' || row || '-' || number || ' '
                              || booking_id || ' ' || coalesce(buyer_id::text, '-'), ' ')
                   AS triples
              FROM (SELECT tier, row, number, booking_id, buyer_id,
                           row_number() OVER () - 1 AS n
                      FROM seats WHERE event_id = %s AND status = %s) AS sold
             GROUP BY n / %s
            """,
            # A seat id names its tier by slug; arrays count from 1, as Tier does.
            ([t.slug for t in sorted(Tier)], event_id, SOLD, per_text),
        )
        return [r.triples for r in rows]

    async def tier_counts(
        self, event_ids: Sequence[uuid.UUID]
    ) -> dict[tuple[uuid.UUID, Tier], TierCounts]:
        rows = await self._db.fetchall(
            "SELECT t.event_id, t.tier, t.sold, coalesce(s.tickets_checked_in, 0) AS checked_in "
            "FROM event_tiers t LEFT JOIN sales s USING (event_id, tier) "
            "WHERE t.event_id = ANY(%s)",
            (list(event_ids),),
        )
        return {(r.event_id, Tier(r.tier)): TierCounts(r.sold, r.checked_in) for r in rows}

    async def record_sales(self, changes: Sequence[SaleChange]) -> None:
        """Moves the report by the changes of every message not seen before, and
        remembers the messages, in one statement."""
        if not changes:
            return
        await self._db.execute(
            """
            WITH change AS (
                SELECT * FROM unnest(%s::text[], %s::uuid[], %s::smallint[], %s::text[],
                                     %s::int[], %s::int[], %s::bigint[], %s::bigint[],
                                     %s::int[])
                       AS c(message_id, event_id, tier, currency, sold, refunded, gross,
                            refunded_minor, checked_in)
            ), first AS (
                INSERT INTO processed_messages (message_id)
                SELECT DISTINCT message_id FROM change
                ON CONFLICT DO NOTHING RETURNING message_id
            )
            INSERT INTO sales AS s (event_id, tier, currency, tickets_sold, tickets_refunded,
                                    gross_minor, refunded_minor, tickets_checked_in)
            SELECT event_id, tier, min(currency), sum(sold), sum(refunded),
                   sum(gross)::bigint, sum(refunded_minor)::bigint, sum(checked_in)
              FROM change WHERE message_id IN (SELECT message_id FROM first)
             GROUP BY event_id, tier
             -- one order for every batch: two batches never lock rows crosswise
             ORDER BY event_id, tier
            ON CONFLICT (event_id, tier) DO UPDATE SET
                tickets_sold = s.tickets_sold + excluded.tickets_sold,
                tickets_refunded = s.tickets_refunded + excluded.tickets_refunded,
                gross_minor = s.gross_minor + excluded.gross_minor,
                refunded_minor = s.refunded_minor + excluded.refunded_minor,
                tickets_checked_in = s.tickets_checked_in + excluded.tickets_checked_in,
                update_time = now()
            """,
            (
                [c.message_id for c in changes],
                [c.event_id for c in changes],
                [c.tier.value for c in changes],
                [c.currency for c in changes],
                [c.sold for c in changes],
                [c.refunded for c in changes],
                [c.gross_minor for c in changes],
                [c.refunded_minor for c in changes],
                [c.checked_in for c in changes],
            ),
        )
