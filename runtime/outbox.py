"""Transactional outbox: messages are rows written with the state change.

A service that publishes adds an `outbox` row in the same PostgreSQL
transaction as the change the message announces, so a message exists if and
only if the change committed. The relay publishes rows to RabbitMQ with
publisher confirms and `mandatory`, and marks a row sent only once the broker
has confirmed it; while the broker is away rows wait and the relay retries
with backoff. Rows are claimed with FOR UPDATE SKIP LOCKED, so any number of
relays may run. Delivery is at-least-once: subscribers dedupe on message_id.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
import psycopg
import sqlalchemy as sa
from google.protobuf.message import Message
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from runtime import metrics, tracing
from runtime.broker import CREATE_TIME_HEADER, EXCHANGE, BackgroundWorker, channel
from runtime.db import libpq_url
from runtime.logs import request_id_var

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/x-protobuf"
NOTIFY_CHANNEL = "outbox"
BATCH_SIZE = 200
MAX_RETRY_DELAY_SECONDS = 60
SENT_RETENTION = "1 hour"  # sent rows kept for inspection, then purged
PURGE_INTERVAL_SECONDS = 60.0
BACKLOG_GAUGE_SECONDS = 5.0
LINGER_SECONDS = 0.02


def trace_context_column() -> sa.Column[str]:
    """The W3C traceparent of the transaction that wrote the row ("" untraced):
    the relay sends it on, so the message's consumer joins that trace."""
    return sa.Column("trace_context", sa.Text, nullable=False, server_default="")


def outbox_table(metadata: sa.MetaData, trace_context: bool = True) -> sa.Table:
    """The outbox as it is now; trace_context=False: as the first migrations
    created it, before the migration that adds trace_context_column()."""
    return sa.Table(
        "outbox",
        metadata,
        sa.Column("message_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("routing_key", sa.Text, nullable=False),
        sa.Column("message_type", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("correlation_id", sa.Text, nullable=False, server_default=""),
        sa.Column(
            "create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column(
            "next_attempt_time",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column("sent_time", sa.DateTime(timezone=True)),
        *([trace_context_column()] if trace_context else []),
        sa.Index(
            "outbox_unsent", "next_attempt_time", postgresql_where=sa.text("sent_time IS NULL")
        ),
    )


# Run by each service's migration that creates its outbox: wakes relays on commit.
CREATE_NOTIFY_TRIGGER = f"""
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('{NOTIFY_CHANNEL}', ''); RETURN NULL; END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
"""
DROP_NOTIFY_TRIGGER = """
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
DROP FUNCTION IF EXISTS outbox_notify();
"""


# For services that write their outbox rows with psycopg (runtime.pg): the
# head of the INSERT, to be completed with a VALUES or SELECT of OutboxMessage.row().
INSERT_OUTBOX_ROW = (
    "INSERT INTO outbox (message_id, routing_key, message_type, payload, correlation_id,"
    " trace_context)"
)
# ... and the named parameters of OutboxMessage.row() in the same order, for a SELECT.
OUTBOX_ROW_PARAMETERS = (
    "%(message_id)s, %(routing_key)s, %(message_type)s, %(payload)s, %(correlation_id)s,"
    " %(trace_context)s"
)


@dataclass(frozen=True)
class OutboxMessage:
    routing_key: str
    message: Message
    message_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def row(self) -> dict[str, Any]:
        """The outbox row's columns, for an INSERT of either kind."""
        return {
            "message_id": self.message_id,
            "routing_key": self.routing_key,
            "message_type": self.message.DESCRIPTOR.full_name,
            "payload": self.message.SerializeToString(),
            "correlation_id": request_id_var.get(),
            "trace_context": tracing.current_traceparent(),
        }


async def enqueue(
    conn: AsyncConnection, table: sa.Table, routing_key: str, message: Message
) -> uuid.UUID:
    """Adds a message to the outbox within the caller's transaction."""
    row = OutboxMessage(routing_key, message)
    await conn.execute(table.insert().values(**row.row()))
    return row.message_id


class OutboxRelay(BackgroundWorker):
    """Publishes outbox rows from a background thread for as long as it is entered."""

    def __init__(self, database_url: str, amqp_url: str) -> None:
        super().__init__("outbox-relay")
        self._dsn = libpq_url(database_url)
        self._amqp_url = amqp_url

    def work(self) -> None:
        with psycopg.connect(self._dsn, autocommit=True) as conn, channel(self._amqp_url) as out:
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            out.confirm_delivery()
            self.connected()
            self._relay(conn, out)

    def _relay(self, conn: psycopg.Connection, channel: BlockingChannel) -> None:
        counted_at = purged_at = 0.0
        while not self._stop.is_set():
            published = self._publish_batch(conn, channel)
            if time.monotonic() - counted_at > BACKLOG_GAUGE_SECONDS:
                backlog = conn.execute("SELECT count(*) FROM outbox WHERE sent_time IS NULL")
                metrics.OUTBOX_BACKLOG.set(backlog.fetchone()[0])
                counted_at = time.monotonic()
            if time.monotonic() - purged_at > PURGE_INTERVAL_SECONDS:
                conn.execute(
                    f"DELETE FROM outbox WHERE sent_time < now() - interval '{SENT_RETENTION}'"
                )
                purged_at = time.monotonic()
            if published < BATCH_SIZE:
                # Sleep until a commit notifies us (polling now and then for retries),
                # then linger a moment so a busy sale publishes in batches.
                if self._woken_by_commit(conn):
                    self._stop.wait(LINGER_SECONDS)
                channel.connection.process_data_events(0)  # heartbeats

    @staticmethod
    def _woken_by_commit(conn: psycopg.Connection) -> bool:
        """Waits up to a second for a commit's notification; whether one came."""
        # Leave the generator at the first notification: lingering inside it
        # kept it waiting for more, so in a busy sale a batch went out only
        # when its one-second timeout ran out.
        for _ in conn.notifies(timeout=1.0, stop_after=1):
            return True
        return False

    def _publish_batch(self, conn: psycopg.Connection, channel: BlockingChannel) -> int:
        with conn.transaction():
            rows = conn.execute(
                """SELECT message_id, routing_key, message_type, payload, correlation_id,
                          create_time, trace_context
                   FROM outbox
                   WHERE sent_time IS NULL AND next_attempt_time <= now()
                   ORDER BY create_time LIMIT %s FOR UPDATE SKIP LOCKED""",
                (BATCH_SIZE,),
            ).fetchall()
            sent, unroutable = [], []
            for (
                message_id,
                routing_key,
                message_type,
                payload,
                correlation_id,
                created,
                trace_context,
            ) in rows:
                properties = pika.BasicProperties(
                    content_type=CONTENT_TYPE,
                    delivery_mode=pika.DeliveryMode.Persistent,
                    message_id=str(message_id),
                    type=message_type,
                    correlation_id=correlation_id or None,
                    timestamp=int(created.timestamp()),
                    headers={
                        CREATE_TIME_HEADER: int(created.timestamp() * 1000),
                        **tracing.message_headers(trace_context),
                    },
                )
                try:
                    channel.basic_publish(
                        EXCHANGE, routing_key, bytes(payload), properties, mandatory=True
                    )
                    sent.append(message_id)
                except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
                    # No queue took it (its subscriber has not declared one yet), or the
                    # broker refused it: keep the row and try again later.
                    log.warning("message %s to %s not accepted: %r", message_id, routing_key, exc)
                    unroutable.append(message_id)
            if sent:
                conn.execute(
                    "UPDATE outbox SET sent_time = now(), attempts = attempts + 1 "
                    "WHERE message_id = ANY(%s)",
                    (sent,),
                )
            if unroutable:
                conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt_time = now() + "
                    "make_interval(secs => least(power(2, attempts), %s)) "
                    "WHERE message_id = ANY(%s)",
                    (MAX_RETRY_DELAY_SECONDS, unroutable),
                )
            return len(rows)
