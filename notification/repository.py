"""The notification database: one row per email, keyed by the message it answers."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from notification.domain import MAX_SEND_ATTEMPTS, Kind, Notification, State, retry_delay

metadata = sa.MetaData()

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("notification_id", pg.UUID(as_uuid=True), primary_key=True),
    # One notification per broker message: a redelivery finds it and stops.
    sa.Column("message_id", sa.Text, nullable=False, unique=True),
    sa.Column("message_type", sa.Text, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("user_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("kind", sa.SmallInteger, nullable=False),
    sa.Column("recipient", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("state", sa.SmallInteger, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column(
        "next_attempt_time",
        sa.DateTime(timezone=True),
        nullable=False,
        server_default=sa.func.now(),
    ),
    sa.Column("last_error", sa.Text, nullable=False, server_default=""),
    sa.Column(
        "create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column("sent_time", sa.DateTime(timezone=True)),
    # What the notification is about, NULL where it is about none (or was
    # recorded before these columns existed).
    sa.Column("booking_id", sa.Text),
    sa.Column("event_id", sa.Text),
    sa.Index("notifications_by_user", "user_id", "create_time", "notification_id"),
    sa.Index("notifications_due", "next_attempt_time", postgresql_where=sa.text("state = 1")),
)

# Accounts deleted (user.deleted): their notifications keep no address or
# message, and one recorded later, from a message that was on its way, is
# recorded without them and never sent.
erased_users = sa.Table(
    "erased_users",
    metadata,
    sa.Column("user_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column(
        "erase_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

ACCOUNT_DELETED = "the account was deleted"


def _notification(row: sa.Row) -> Notification:
    return Notification(
        row.notification_id,
        row.user_id,
        Kind(row.kind),
        row.recipient,
        row.subject,
        row.message_id,
        row.message_type,
        row.payload,
        State(row.state),
        row.attempts,
        row.create_time,
        row.sent_time,
        row.booking_id or "",
        row.event_id or "",
    )


class EmailQueue:
    """The emails to send and sent, one row per broker message. Queries on one
    connection, inside the caller's transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def record(self, notification: Notification) -> bool:
        """False if the message was recorded before (a redelivery)."""
        # A deleted account's (known here, or erased at the source: no address),
        # found in the same statement, so no round trip is added.
        erased = sa.or_(
            sa.literal(not notification.recipient),
            sa.select(erased_users.c.user_id)
            .where(erased_users.c.user_id == notification.user_id)
            .exists(),
        )

        def unless_erased(value: object, erased_value: object) -> sa.Case:
            return sa.case((erased, erased_value), else_=value)

        inserted = await self._conn.execute(
            pg.insert(notifications)
            .values(
                notification_id=notification.notification_id,
                message_id=notification.message_id,
                message_type=notification.message_type,
                payload=unless_erased(sa.literal(notification.payload, sa.LargeBinary), b""),
                user_id=notification.user_id,
                kind=notification.kind.value,
                recipient=unless_erased(sa.literal(notification.recipient, sa.Text), ""),
                subject=notification.subject,
                state=unless_erased(State.PENDING.value, State.FAILED.value),
                last_error=unless_erased("", ACCOUNT_DELETED),
                booking_id=notification.booking_id or None,
                event_id=notification.event_id or None,
            )
            .on_conflict_do_nothing(index_elements=[notifications.c.message_id])
            .returning(notifications.c.notification_id)
        )
        return inserted.first() is not None

    async def erase_user(self, user_id: uuid.UUID) -> int:
        """Records the account as deleted and erases the address and message
        (the email, name and any code) of its notifications, which stay, unsent
        if they were not yet; how many it erased. Again is a no-op.

        The SHARE lock waits for the recordings under way, which may not have
        seen the account's erasure yet, so that this sees their rows; later
        ones wait for this to commit, then see it."""
        await self._conn.execute(
            pg.insert(erased_users).values(user_id=user_id).on_conflict_do_nothing()
        )
        await self._conn.execute(sa.text("LOCK TABLE notifications IN SHARE MODE"))
        erased = await self._conn.execute(
            notifications.update()
            .where(
                notifications.c.user_id == user_id,
                sa.or_(notifications.c.recipient != "", notifications.c.payload != b""),
            )
            .values(
                recipient="",
                payload=b"",
                state=sa.case(
                    (notifications.c.state == State.PENDING.value, State.FAILED.value),
                    else_=notifications.c.state,
                ),
                last_error=sa.case(
                    (notifications.c.state == State.PENDING.value, ACCOUNT_DELETED),
                    else_=notifications.c.last_error,
                ),
            )
        )
        return erased.rowcount

    async def claim_due(self, limit: int, lease_seconds: int) -> list[Notification]:
        """Due PENDING notifications, leased to this sender so no other sends them too."""
        due = (
            sa.select(notifications.c.notification_id)
            .where(
                notifications.c.state == State.PENDING.value,
                notifications.c.next_attempt_time <= sa.func.now(),
            )
            .order_by(notifications.c.next_attempt_time)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        rows = await self._conn.execute(
            notifications.update()
            .where(notifications.c.notification_id.in_(due))
            .values(
                next_attempt_time=sa.func.now()
                + sa.func.make_interval(0, 0, 0, 0, 0, 0, lease_seconds)
            )
            .returning(notifications)
        )
        return sorted((_notification(r) for r in rows), key=lambda n: n.create_time)

    async def mark_sent(self, notification_ids: Sequence[uuid.UUID]) -> None:
        """All of a batch in one statement: a statement costs more than its rows."""
        if not notification_ids:
            return
        await self._conn.execute(
            notifications.update()
            .where(notifications.c.notification_id.in_(notification_ids))
            .values(
                state=State.SENT.value,
                sent_time=sa.func.now(),
                attempts=notifications.c.attempts + 1,
                last_error="",
            )
        )

    async def mark_failed_attempt(self, notification: Notification, error: str) -> None:
        attempts = notification.attempts + 1
        gave_up = attempts >= MAX_SEND_ATTEMPTS
        await self._conn.execute(
            notifications.update()
            .where(
                notifications.c.notification_id == notification.notification_id,
                # Erased while it was being sent: it stays unsent, with nothing to send.
                notifications.c.recipient != "",
            )
            .values(
                attempts=attempts,
                last_error=error[:500],
                state=(State.FAILED if gave_up else State.PENDING).value,
                next_attempt_time=sa.func.now() + retry_delay(attempts),
            )
        )

    async def page(
        self, user_id: uuid.UUID, limit: int, before: tuple[datetime, uuid.UUID] | None
    ) -> list[Notification]:
        query = sa.select(notifications).where(notifications.c.user_id == user_id)
        if before is not None:
            query = query.where(
                sa.tuple_(notifications.c.create_time, notifications.c.notification_id) < before
            )
        query = query.order_by(
            notifications.c.create_time.desc(), notifications.c.notification_id.desc()
        ).limit(limit)
        return [_notification(r) for r in await self._conn.execute(query)]
