"""The booking database: bookings and the outbox."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from booking.domain import BookedSeat, Booking, EventSnapshot, State
from runtime.outbox import outbox_table

metadata = sa.MetaData()

bookings = sa.Table(
    "bookings",
    metadata,
    sa.Column("booking_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("user_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("user_email", sa.Text, nullable=False),
    sa.Column("request_id", sa.Text, nullable=False),
    sa.Column("event_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("event_title", sa.Text, nullable=False),
    sa.Column("event_venue", sa.Text, nullable=False),
    sa.Column("event_starts_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("seats", pg.JSONB, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("total_minor", sa.BigInteger, nullable=False),
    sa.Column("state", sa.SmallInteger, nullable=False),
    sa.Column("owner_token", sa.Text, nullable=False),
    sa.Column("fencing_token", sa.BigInteger, nullable=False),
    sa.Column("payment_id", pg.UUID(as_uuid=True)),
    sa.Column("failure_reason", sa.Text, nullable=False, server_default=""),
    sa.Column("cancel_requested_time", sa.DateTime(timezone=True)),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("user_id", "request_id", name="one_booking_per_request"),
    sa.Index("bookings_by_user", "user_id", "create_time", "booking_id"),
    sa.Index("bookings_by_time", "create_time", "booking_id"),
    sa.Index(
        "bookings_unsettled",
        "update_time",
        postgresql_where=sa.text("state = 1 OR cancel_requested_time IS NOT NULL"),
    ),
)

outbox = outbox_table(metadata)


def _booking(row: sa.Row) -> Booking:
    return Booking(
        booking_id=row.booking_id,
        user_id=row.user_id,
        user_email=row.user_email,
        request_id=row.request_id,
        event=EventSnapshot(row.event_id, row.event_title, row.event_venue, row.event_starts_at),
        seats=tuple(BookedSeat(s["seat_id"], s["tier"], s["price_minor"]) for s in row.seats),
        currency=row.currency,
        total_minor=row.total_minor,
        state=State(row.state),
        owner_token=row.owner_token,
        fencing_token=row.fencing_token,
        create_time=row.create_time,
        update_time=row.update_time,
        payment_id=row.payment_id,
        failure_reason=row.failure_reason,
    )


class Ledger:
    """Queries on one connection, inside the caller's transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, booking: Booking) -> bool:
        """False if a booking with this id exists already (a concurrent retry)."""
        inserted = await self._conn.execute(
            pg.insert(bookings)
            .values(
                booking_id=booking.booking_id,
                user_id=booking.user_id,
                user_email=booking.user_email,
                request_id=booking.request_id,
                event_id=booking.event.event_id,
                event_title=booking.event.title,
                event_venue=booking.event.venue,
                event_starts_at=booking.event.starts_at,
                seats=[
                    {"seat_id": s.seat_id, "tier": s.tier, "price_minor": s.price_minor}
                    for s in booking.seats
                ],
                currency=booking.currency,
                total_minor=booking.total_minor,
                state=booking.state.value,
                owner_token=booking.owner_token,
                fencing_token=booking.fencing_token,
                create_time=booking.create_time,
                update_time=booking.update_time,
            )
            .on_conflict_do_nothing()
            .returning(bookings.c.booking_id)
        )
        return inserted.first() is not None

    async def get(self, booking_id: uuid.UUID, for_update: bool = False) -> Booking | None:
        query = sa.select(bookings).where(bookings.c.booking_id == booking_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).first()
        return _booking(row) if row else None

    async def settle(
        self, booking_id: uuid.UUID, from_state: State, to_state: State, **changes: Any
    ) -> Booking | None:
        """Moves a booking on if it is still in from_state; None if someone else did."""
        row = (
            await self._conn.execute(
                bookings.update()
                .where(bookings.c.booking_id == booking_id, bookings.c.state == from_state.value)
                .values(state=to_state.value, update_time=sa.func.now(), **changes)
                .returning(bookings)
            )
        ).first()
        return _booking(row) if row else None

    async def update_hold(self, booking_id: uuid.UUID, fencing_token: int) -> None:
        await self._conn.execute(
            bookings.update()
            .where(bookings.c.booking_id == booking_id)
            .values(fencing_token=fencing_token, update_time=sa.func.now())
        )

    async def request_cancel(self, booking_id: uuid.UUID) -> None:
        await self._conn.execute(
            bookings.update()
            .where(bookings.c.booking_id == booking_id, bookings.c.cancel_requested_time.is_(None))
            .values(cancel_requested_time=sa.func.now(), update_time=sa.func.now())
        )

    async def delete_pending(self, booking_id: uuid.UUID) -> None:
        await self._conn.execute(
            bookings.delete().where(
                bookings.c.booking_id == booking_id, bookings.c.state == State.PENDING.value
            )
        )

    async def page(
        self,
        user_id: uuid.UUID | None,
        state: State | None,
        limit: int,
        before: tuple[datetime, uuid.UUID] | None,
    ) -> list[Booking]:
        query = sa.select(bookings)
        if user_id is not None:
            query = query.where(bookings.c.user_id == user_id)
        if state is not None:
            query = query.where(bookings.c.state == state.value)
        if before is not None:
            query = query.where(sa.tuple_(bookings.c.create_time, bookings.c.booking_id) < before)
        query = query.order_by(bookings.c.create_time.desc(), bookings.c.booking_id.desc())
        return [_booking(r) for r in await self._conn.execute(query.limit(limit))]

    async def claim_unsettled(self, older_than_seconds: float, limit: int) -> list[Booking]:
        """Stale PENDING bookings and unfinished cancellations, leased to this sweeper:
        their update_time moves to now, so no other sweeper takes them for a while."""
        stale = (
            sa.select(bookings.c.booking_id)
            .where(
                sa.or_(
                    bookings.c.state == State.PENDING.value,
                    sa.and_(
                        bookings.c.cancel_requested_time.is_not(None),
                        bookings.c.state == State.CONFIRMED.value,
                    ),
                ),
                bookings.c.update_time
                < sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, older_than_seconds),
            )
            .order_by(bookings.c.update_time)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        rows = await self._conn.execute(
            bookings.update()
            .where(bookings.c.booking_id.in_(stale))
            .values(update_time=sa.func.now())
            .returning(bookings)
        )
        return [_booking(r) for r in rows]
