"""Subscribing to `ticketing.events`: topology, manual acks, dedupe, dead letters.

Each subscriber owns a durable quorum queue bound to the routing keys it
wants, with a dead-letter exchange routing to `<queue>.dead`. Messages are
handed over in batches of whatever has arrived (up to the prefetch), so a busy
queue costs one transaction per batch, not per message; a quiet one still
hands each message over as soon as it arrives. Deliveries are acked only
after the handler's transaction committed; a batch that fails is retried
with backoff up to MAX_DELIVERIES times, then the broker dead-letters its
messages. The backoff is a timer on the connection, not a pause of the
consumer: while a failed batch waits, the next messages are handled (up to the
prefetch) and the heartbeats go on. A message that can never be handled (PoisonMessage: unparsable,
unknown type) goes to the dead-letter queue at once. Handlers dedupe on
message_id in the same transaction as their effect, so a redelivery is acted
on once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import pika
import pika.exceptions
import sqlalchemy as sa
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from runtime import metrics, tracing
from runtime.broker import CREATE_TIME_HEADER, EXCHANGE, BackgroundWorker, channel
from runtime.logs import request_id_var

log = logging.getLogger(__name__)

DEAD_LETTER_EXCHANGE = "ticketing.dead"
MAX_DELIVERIES = 8
HANDLER_TIMEOUT_SECONDS = 60


class PoisonMessage(Exception):
    """The message can never be handled; it goes to the dead-letter queue."""


Message = tuple[pika.spec.Basic.Deliver, pika.BasicProperties, bytes]


@dataclass(frozen=True)
class Delivery:
    message_id: str
    message_type: str
    routing_key: str
    body: bytes
    correlation_id: str
    attempt: int  # 1 on first delivery
    trace_context: str = ""  # the W3C traceparent of the span that sent it, if any


# Handles what it can of a batch in one go; returns the messages it never can.
BatchHandler = Callable[[list[Delivery]], Awaitable[dict[str, PoisonMessage]]]


def retry_delay(attempt: int) -> float:
    """Seconds before a failed batch goes back to the queue: 0.5, 1, 2, ... 15."""
    return min(0.25 * 2**attempt, 15.0)


def create_time(properties: pika.BasicProperties) -> float | None:
    """When the message's outbox row was written (seconds since the epoch), if it says."""
    headers = properties.headers or {}
    millis = headers.get(CREATE_TIME_HEADER)
    if isinstance(millis, int):
        return millis / 1000
    # A message from a relay that predates the header: whole seconds will do.
    return float(properties.timestamp) if properties.timestamp else None


def _requeue(channel: BlockingChannel, tags: list[int]) -> None:
    if channel.is_open:  # else the broker has requeued them already
        for tag in tags:
            channel.basic_nack(tag, requeue=True)


def processed_messages_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "processed_messages",
        metadata,
        sa.Column("message_id", sa.Text, primary_key=True),
        sa.Column(
            "processed_time",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
    )


async def first_delivery(conn: AsyncConnection, table: sa.Table, message_id: str) -> bool:
    """Records the message as handled; False if it was handled before.

    Call it in the transaction that applies the message's effect.
    """
    inserted = await conn.execute(
        pg.insert(table)
        .values(message_id=message_id)
        .on_conflict_do_nothing()
        .returning(table.c.message_id)
    )
    return inserted.first() is not None


def declare_subscription(channel: BlockingChannel, queue: str, routing_keys: Sequence[str]) -> None:
    """Idempotently declares a subscriber's queue, its dead-letter queue and bindings."""
    channel.exchange_declare(EXCHANGE, "topic", durable=True)
    channel.exchange_declare(DEAD_LETTER_EXCHANGE, "direct", durable=True)
    quorum = {"x-queue-type": "quorum"}
    channel.queue_declare(f"{queue}.dead", durable=True, arguments=quorum)
    channel.queue_bind(f"{queue}.dead", DEAD_LETTER_EXCHANGE, routing_key=queue)
    channel.queue_declare(
        queue,
        durable=True,
        arguments={
            **quorum,
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-dead-letter-routing-key": queue,
            "x-delivery-limit": MAX_DELIVERIES,
        },
    )
    for key in routing_keys:
        channel.queue_bind(queue, EXCHANGE, routing_key=key)


class Consumer(BackgroundWorker):
    """Consumes one queue from a background thread, handling its messages on the
    service's event loop, for as long as it is entered."""

    def __init__(
        self,
        amqp_url: str,
        queue: str,
        routing_keys: Sequence[str],
        handler: BatchHandler,
        prefetch: int = 16,
        retry_delay: Callable[[int], float] = retry_delay,
    ) -> None:
        super().__init__(f"consumer-{queue}")
        self._amqp_url = amqp_url
        self._queue = queue
        self._routing_keys = routing_keys
        self._handler = handler
        self._prefetch = prefetch
        self._retry_delay = retry_delay

    def work(self) -> None:
        with channel(self._amqp_url) as incoming:
            declare_subscription(incoming, self._queue, self._routing_keys)
            incoming.basic_qos(prefetch_count=self._prefetch)
            self.connected()
            log.info("consuming %s", self._queue)
            batch: list[Message] = []
            for method, properties, body in incoming.consume(self._queue, inactivity_timeout=0.5):
                if self._stop.is_set():
                    break
                if method is not None:
                    batch.append((method, properties, body))
                    if len(batch) < self._prefetch and incoming.get_waiting_message_count():
                        continue  # more has arrived already: take it in the same batch
                if batch:
                    self._deliver(incoming, batch)
                    batch = []

    def _deliver(self, channel: BlockingChannel, batch: list[Message]) -> None:
        poison: dict[int, PoisonMessage] = {}
        deliveries: dict[int, Delivery] = {}
        create_times: dict[int, float] = {}
        for method, properties, body in batch:
            headers = properties.headers or {}
            created_at = create_time(properties)
            if created_at is not None:
                create_times[method.delivery_tag] = created_at
            delivery = Delivery(
                message_id=properties.message_id or "",
                message_type=properties.type or "",
                routing_key=method.routing_key,
                body=body,
                correlation_id=properties.correlation_id or "",
                attempt=int(headers.get("x-delivery-count", 0)) + 1,
                trace_context=_text(headers.get(tracing.TRACEPARENT)),
            )
            if not delivery.message_id:
                poison[method.delivery_tag] = PoisonMessage(
                    "message has no message_id, so it cannot be deduplicated"
                )
            else:
                deliveries[method.delivery_tag] = delivery
        assert self._loop is not None
        try:
            handling = asyncio.run_coroutine_threadsafe(
                self._handle(list(deliveries.values())), self._loop
            )
            refused = handling.result(HANDLER_TIMEOUT_SECONDS)
        except Exception:
            attempt = max((d.attempt for d in deliveries.values()), default=1)
            log.exception(
                "handling %d messages failed (attempt %d of %d)",
                len(deliveries),
                attempt,
                MAX_DELIVERIES,
            )
            metrics.MESSAGES_CONSUMED.labels(self._queue, "retried").inc(len(deliveries))
            # Back off before the broker redelivers (past the limit it dead-letters),
            # on a timer: the consumer goes on with whatever else has arrived.
            channel.connection.call_later(
                self._retry_delay(attempt), functools.partial(_requeue, channel, list(deliveries))
            )
        else:
            for tag, delivery in deliveries.items():
                if delivery.message_id in refused:
                    poison[tag] = refused[delivery.message_id]
            lag = metrics.MESSAGE_LAG.labels(self._queue)
            handled_at = time.time()
            for tag in deliveries:
                if tag not in poison:
                    channel.basic_ack(tag)
                    created_at = create_times.get(tag)
                    if created_at is not None:
                        lag.observe(max(handled_at - created_at, 0.0))
            metrics.MESSAGES_CONSUMED.labels(self._queue, "handled").inc(
                len(deliveries) - len(poison)
            )
        for tag, reason in poison.items():
            log.error("dead-lettering delivery %d of %s: %s", tag, self._queue, reason)
            metrics.MESSAGES_CONSUMED.labels(self._queue, "dead_lettered").inc()
            channel.basic_nack(tag, requeue=False)

    async def _handle(self, deliveries: list[Delivery]) -> dict[str, PoisonMessage]:
        first = deliveries[0] if deliveries else None
        token = request_id_var.set(first.correlation_id or first.message_id if first else "")
        try:
            if not deliveries:
                return {}
            if not tracing.enabled():
                return await self._handler(deliveries)
            with tracing.consuming(
                self._queue, [(d.routing_key, d.trace_context) for d in deliveries]
            ):
                return await self._handler(deliveries)
        finally:
            request_id_var.reset(token)


def _text(header: object) -> str:
    """A header's value as text: pika hands a long string over as bytes."""
    if isinstance(header, bytes):
        return header.decode(errors="replace")
    return header if isinstance(header, str) else ""
