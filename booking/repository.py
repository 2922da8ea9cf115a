"""The booking database: bookings and the outbox.

The tables are declared here for the migrations; `PgLedger` (the saga's
`booking.gateways.Ledger`) reads and writes them with one statement per step
in autocommit (runtime.pg), since every step of the saga is on the sale path:
a settlement and its outbox message are one statement, so one unit of work.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from psycopg import sql
from psycopg.types.json import Jsonb
from sqlalchemy.dialects import postgresql as pg

from booking import convert
from booking.domain import Announcement, BookedSeat, Booking, CheckIn, EventSnapshot, State
from runtime.outbox import INSERT_OUTBOX_ROW, OUTBOX_ROW_PARAMETERS, OutboxMessage, outbox_table
from runtime.pg import Database
from ticketing.booking.v1 import messages_pb2

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
    # Set on every confirmed booking of a cancelled event (booking migration 0003).
    sa.Column("event_cancel_reason", sa.Text),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("user_id", "request_id", name="one_booking_per_request"),
    sa.Index("bookings_by_user", "user_id", "create_time", "booking_id"),
    sa.Index("bookings_by_time", "create_time", "booking_id"),
    sa.Index("bookings_by_event", "event_id", "state"),
    sa.Index(
        "bookings_unsettled",
        "update_time",
        postgresql_where=sa.text("state = 1 OR cancel_requested_time IS NOT NULL"),
    ),
)

outbox = outbox_table(metadata)

# Cancelled events whose bookings are being refunded; done at finish_time.
event_cancellations = sa.Table(
    "event_cancellations",
    metadata,
    sa.Column("event_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("cancel_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column(
        "receive_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    # What the last progress report said, so an unchanged one is not sent again.
    sa.Column("reported_total", sa.Integer),
    sa.Column("reported_refunded", sa.Integer),
    sa.Column("finish_time", sa.DateTime(timezone=True)),
    sa.Index(
        "event_cancellations_unfinished",
        "receive_time",
        postgresql_where=sa.text("finish_time IS NULL"),
    ),
)

# A ticket is admitted once: the primary key decides between concurrent scans.
check_ins = sa.Table(
    "check_ins",
    metadata,
    sa.Column("booking_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("seat_id", sa.Text, nullable=False),
    sa.Column("event_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("checked_in_by", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("check_in_time", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("booking_id", "seat_id", name="one_check_in_per_ticket"),
    sa.Index("check_ins_by_event", "event_id"),
)


def _booking(row: Any) -> Booking:
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
        event_cancel_reason=row.event_cancel_reason,
    )


_ADD = """
INSERT INTO bookings (booking_id, user_id, user_email, request_id, event_id, event_title,
                      event_venue, event_starts_at, seats, currency, total_minor, state,
                      owner_token, fencing_token, create_time, update_time)
VALUES (%(booking_id)s, %(user_id)s, %(user_email)s, %(request_id)s, %(event_id)s,
        %(event_title)s, %(event_venue)s, %(event_starts_at)s, %(seats)s, %(currency)s,
        %(total_minor)s, %(state)s, %(owner_token)s, %(fencing_token)s, %(create_time)s,
        %(update_time)s)
ON CONFLICT DO NOTHING
RETURNING booking_id
"""

# The state change and the message announcing it, in one statement: the
# message exists if and only if the change committed.
_SETTLE = f"""
WITH done AS (
    UPDATE bookings
       SET state = %(state)s, payment_id = %(payment_id)s, failure_reason = %(failure_reason)s,
           update_time = %(update_time)s
     WHERE booking_id = %(booking_id)s AND state = %(from_state)s
    RETURNING booking_id
), announced AS (
    {INSERT_OUTBOX_ROW} SELECT {OUTBOX_ROW_PARAMETERS} FROM done
)
SELECT count(*) AS settled FROM done
"""

_CLAIM_UNSETTLED = """
UPDATE bookings SET update_time = now()
 WHERE booking_id IN (
       SELECT booking_id FROM bookings
        WHERE (state = %(pending)s
               OR (cancel_requested_time IS NOT NULL AND state = %(confirmed)s))
          AND update_time < now() - make_interval(secs => %(older_than)s)
        ORDER BY update_time
        LIMIT %(limit)s
          FOR UPDATE SKIP LOCKED)
RETURNING *
"""


class PgLedger:
    """The bookings, each call one statement (runtime.pg)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, booking: Booking) -> bool:
        """False if a booking with this id exists already (a concurrent retry)."""
        seats = [
            {"seat_id": s.seat_id, "tier": s.tier, "price_minor": s.price_minor}
            for s in booking.seats
        ]
        inserted = await self._db.fetchone(
            _ADD,
            {
                "booking_id": booking.booking_id,
                "user_id": booking.user_id,
                "user_email": booking.user_email,
                "request_id": booking.request_id,
                "event_id": booking.event.event_id,
                "event_title": booking.event.title,
                "event_venue": booking.event.venue,
                "event_starts_at": booking.event.starts_at,
                "seats": Jsonb(seats),
                "currency": booking.currency,
                "total_minor": booking.total_minor,
                "state": booking.state.value,
                "owner_token": booking.owner_token,
                "fencing_token": booking.fencing_token,
                "create_time": booking.create_time,
                "update_time": booking.update_time,
            },
        )
        return inserted is not None

    async def get(self, booking_id: uuid.UUID) -> Booking | None:
        row = await self._db.fetchone("SELECT * FROM bookings WHERE booking_id = %s", (booking_id,))
        return _booking(row) if row else None

    async def settle(self, announcement: Announcement, from_state: State) -> bool:
        """Moves the announced booking to its state, payment and failure reason if
        it is still in from_state, with its message; False if someone else moved it."""
        settled = announcement.booking
        row = await self._db.fetchone(
            _SETTLE,
            {
                "booking_id": settled.booking_id,
                "from_state": from_state.value,
                "state": settled.state.value,
                "payment_id": settled.payment_id,
                "failure_reason": settled.failure_reason,
                "update_time": settled.update_time,
                **convert.outbox_message(announcement).row(),
            },
        )
        return bool(row and row.settled)

    async def lease(self, booking_id: uuid.UUID, seen_update_time: datetime) -> Booking | None:
        row = await self._db.fetchone(
            "UPDATE bookings SET update_time = now() "
            "WHERE booking_id = %s AND state = %s AND update_time = %s RETURNING *",
            (booking_id, State.PENDING.value, seen_update_time),
        )
        return _booking(row) if row else None

    async def update_hold(self, booking_id: uuid.UUID, fencing_token: int) -> None:
        await self._db.execute(
            "UPDATE bookings SET fencing_token = %s, update_time = now() WHERE booking_id = %s",
            (fencing_token, booking_id),
        )

    async def request_cancel(self, booking_id: uuid.UUID) -> None:
        await self._db.execute(
            "UPDATE bookings SET cancel_requested_time = now(), update_time = now() "
            "WHERE booking_id = %s AND cancel_requested_time IS NULL",
            (booking_id,),
        )

    async def delete_pending(self, booking_id: uuid.UUID) -> None:
        await self._db.execute(
            "DELETE FROM bookings WHERE booking_id = %s AND state = %s",
            (booking_id, State.PENDING.value),
        )

    async def page(
        self,
        user_id: uuid.UUID | None,
        state: State | None,
        limit: int,
        before: tuple[datetime, uuid.UUID] | None,
    ) -> list[Booking]:
        conditions: list[sql.Composable] = [sql.SQL("true")]
        params: list[Any] = []
        if user_id is not None:
            conditions.append(sql.SQL("user_id = %s"))
            params.append(user_id)
        if state is not None:
            conditions.append(sql.SQL("state = %s"))
            params.append(state.value)
        if before is not None:
            conditions.append(sql.SQL("(create_time, booking_id) < (%s, %s)"))
            params += before
        query = sql.SQL(
            "SELECT * FROM bookings WHERE {} ORDER BY create_time DESC, booking_id DESC LIMIT %s"
        ).format(sql.SQL(" AND ").join(conditions))
        return [_booking(r) for r in await self._db.fetchall(query, (*params, limit))]

    async def claim_unsettled(self, older_than_seconds: float, limit: int) -> list[Booking]:
        """Stale PENDING bookings and unfinished cancellations, leased to this sweeper:
        their update_time moves to now, so no other sweeper takes them for a while."""
        rows = await self._db.fetchall(
            _CLAIM_UNSETTLED,
            {
                "pending": State.PENDING.value,
                "confirmed": State.CONFIRMED.value,
                "older_than": older_than_seconds,
                "limit": limit,
            },
        )
        return [_booking(r) for r in rows]


_CLAIM_EVENT_REFUNDS = """
UPDATE bookings SET cancel_requested_time = coalesce(cancel_requested_time, now()),
                    update_time = now()
 WHERE booking_id IN (
       SELECT booking_id FROM bookings
        WHERE event_id = %(event_id)s AND state = %(confirmed)s
          AND event_cancel_reason IS NOT NULL
          AND (cancel_requested_time IS NULL
               OR update_time < now() - make_interval(secs => %(lease)s))
        -- the least recently tried first: one that keeps failing does not
        -- keep the others waiting
        ORDER BY update_time, booking_id
        LIMIT %(limit)s
          FOR UPDATE SKIP LOCKED)
RETURNING *
"""

# The report and the row that remembers it, in one statement, and only when it
# says something new.
_REPORT_PROGRESS = f"""
WITH reported AS (
    UPDATE event_cancellations
       SET reported_total = %(total)s, reported_refunded = %(refunded)s,
           finish_time = CASE WHEN %(finished)s THEN now() END
     WHERE event_id = %(event_id)s AND finish_time IS NULL
       AND (reported_total IS DISTINCT FROM %(total)s
            OR reported_refunded IS DISTINCT FROM %(refunded)s OR %(finished)s)
    RETURNING event_id
), announced AS (
    {INSERT_OUTBOX_ROW} SELECT {OUTBOX_ROW_PARAMETERS} FROM reported
)
SELECT count(*) AS reported FROM reported
"""


class PgEventRefunds:
    """The cancelled events being refunded (booking.gateways.EventRefundLedger)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, event_id: uuid.UUID, reason: str, cancel_time: datetime) -> bool:
        """Records a cancelled event; False if it was recorded before."""
        added = await self._db.fetchone(
            "INSERT INTO event_cancellations (event_id, reason, cancel_time) VALUES (%s, %s, %s) "
            "ON CONFLICT DO NOTHING RETURNING event_id",
            (event_id, reason, cancel_time),
        )
        return added is not None

    async def unfinished(self) -> list[tuple[uuid.UUID, str]]:
        rows = await self._db.fetchall(
            "SELECT event_id, reason FROM event_cancellations WHERE finish_time IS NULL "
            "ORDER BY receive_time",
            (),
        )
        return [(r.event_id, r.reason) for r in rows]

    async def mark(self, event_id: uuid.UUID, reason: str) -> int:
        """Marks the event's confirmed bookings as going with it (again and again:
        a booking still being paid when the event was cancelled may confirm after)."""
        return await self._db.execute(
            "UPDATE bookings SET event_cancel_reason = %s "
            "WHERE event_id = %s AND state = %s AND event_cancel_reason IS NULL",
            (reason, event_id, State.CONFIRMED.value),
        )

    async def claim(self, event_id: uuid.UUID, lease_seconds: float, limit: int) -> list[Booking]:
        """Marked bookings not yet cancelled, leased to this caller for a while."""
        rows = await self._db.fetchall(
            _CLAIM_EVENT_REFUNDS,
            {
                "event_id": event_id,
                "confirmed": State.CONFIRMED.value,
                "lease": lease_seconds,
                "limit": limit,
            },
        )
        return [_booking(r) for r in rows]

    async def progress(self, event_id: uuid.UUID) -> tuple[int, int, int]:
        """(bookings to refund, refunded, unsettled) of the event: unsettled ones
        are still being paid, or confirmed and not yet marked."""
        row = await self._db.fetchone(
            "SELECT count(*) FILTER (WHERE event_cancel_reason IS NOT NULL) AS total, "
            "count(*) FILTER (WHERE event_cancel_reason IS NOT NULL AND state = %s) AS refunded, "
            "count(*) FILTER (WHERE state = %s "
            "                 OR (state = %s AND event_cancel_reason IS NULL)) AS unsettled "
            "FROM bookings WHERE event_id = %s",
            (State.CANCELLED.value, State.PENDING.value, State.CONFIRMED.value, event_id),
        )
        assert row is not None
        return row.total, row.refunded, row.unsettled

    async def report(self, event_id: uuid.UUID, total: int, refunded: int, finished: bool) -> bool:
        """Announces the progress if it changed (finished: for the last time)."""
        message = messages_pb2.EventRefundProgress(
            event_id=str(event_id), bookings_total=total, bookings_refunded=refunded
        )
        if finished:
            message.finish_time.GetCurrentTime()
        row = await self._db.fetchone(
            _REPORT_PROGRESS,
            {
                "event_id": event_id,
                "total": total,
                "refunded": refunded,
                "finished": finished,
                **OutboxMessage("booking.event_refunds", message).row(),
            },
        )
        return bool(row and row.reported)


# The first scan's row and its message commit together, and a second scan
# (the conflict) writes neither: the sales report counts each ticket once.
_RECORD_CHECK_IN = f"""
WITH admitted AS (
    INSERT INTO check_ins (booking_id, seat_id, event_id, checked_in_by, check_in_time)
    VALUES (%(booking_id)s, %(seat_id)s, %(event_id)s, %(by)s, %(at)s)
    ON CONFLICT DO NOTHING RETURNING check_in_time
), announced AS (
    {INSERT_OUTBOX_ROW} SELECT {OUTBOX_ROW_PARAMETERS} FROM admitted
)
SELECT check_in_time FROM admitted
"""


class PgCheckIns:
    """Check-ins at the door (booking.gateways.CheckIns)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, check_in: CheckIn) -> tuple[datetime, bool]:
        booking_id, seat_id = check_in.booking.booking_id, check_in.seat.seat_id
        inserted = await self._db.fetchone(
            _RECORD_CHECK_IN,
            {
                "booking_id": booking_id,
                "seat_id": seat_id,
                "event_id": check_in.booking.event.event_id,
                "by": check_in.by,
                "at": check_in.time,
                **OutboxMessage("booking.checked_in", convert.checked_in(check_in)).row(),
            },
        )
        if inserted is not None:
            return inserted.check_in_time, True
        # A conflict waited for the row that won, so it is committed and readable now.
        first = await self._db.fetchone(
            "SELECT check_in_time FROM check_ins WHERE booking_id = %s AND seat_id = %s",
            (booking_id, seat_id),
        )
        assert first is not None
        return first.check_in_time, False

    async def counts(self, event_id: uuid.UUID) -> dict[str, int]:
        rows = await self._db.fetchall(
            "SELECT split_part(seat_id, '-', 1) AS tier, count(*) AS n FROM check_ins "
            "WHERE event_id = %s GROUP BY 1",
            (event_id,),
        )
        return {r.tier: r.n for r in rows}


# One statement (runtime.pg): the bookings' emails, the sent messages' copies,
# and how many unsent messages still name the user.
_ERASE_USER = """
WITH erased AS (
    UPDATE bookings SET user_email = '' WHERE user_id = %(user_id)s AND user_email <> ''
    RETURNING 1
), purged AS (
    DELETE FROM outbox WHERE sent_time IS NOT NULL AND position(%(needle)s IN payload) > 0
)
SELECT (SELECT count(*) FROM erased) AS bookings,
       (SELECT count(*) FROM outbox
        WHERE sent_time IS NULL AND position(%(needle)s IN payload) > 0) AS unsent
"""


class PgAccountErasure:
    """A deleted account's email erased from the bookings (booking.erasure)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def erase_user(self, user_id: uuid.UUID) -> tuple[int, int]:
        """(bookings erased, outbox messages about the user not yet sent)."""
        # A message names the user by the id's text; a random UUID's text is in
        # no other user's.
        row = await self._db.fetchone(
            _ERASE_USER, {"user_id": user_id, "needle": str(user_id).encode()}
        )
        return row.bookings, row.unsent
