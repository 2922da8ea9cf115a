"""Subscribing to `ticketing.events`: topology, manual acks, dedupe, dead letters.

Each subscriber owns a durable quorum queue bound to the routing keys it
wants, with a dead-letter exchange routing to `<queue>.dead`. Deliveries are
acked only after the handler's transaction committed; a handler that fails
is retried with backoff up to MAX_DELIVERIES times, then the broker
dead-letters the message. A message that can never be handled (PoisonMessage:
unparsable, unknown type) goes to the dead-letter queue at once. Handlers
dedupe on message_id in the same transaction as their effect, so a
redelivery is acted on once.
"""

from __future__ import annotations

import asyncio
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

from runtime import metrics
from runtime.broker import EXCHANGE, BackgroundWorker, channel
from runtime.logs import request_id_var

log = logging.getLogger(__name__)

DEAD_LETTER_EXCHANGE = "ticketing.dead"
MAX_DELIVERIES = 8
HANDLER_TIMEOUT_SECONDS = 60


class PoisonMessage(Exception):
    """The message can never be handled; it goes to the dead-letter queue."""


@dataclass(frozen=True)
class Delivery:
    message_id: str
    message_type: str
    routing_key: str
    body: bytes
    correlation_id: str
    attempt: int  # 1 on first delivery


Handler = Callable[[Delivery], Awaitable[None]]


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
    """Consumes one queue from a background thread, handling each message on the
    service's event loop, for as long as it is entered."""

    def __init__(
        self,
        amqp_url: str,
        queue: str,
        routing_keys: Sequence[str],
        handler: Handler,
        prefetch: int = 16,
    ) -> None:
        super().__init__(f"consumer-{queue}")
        self._amqp_url = amqp_url
        self._queue = queue
        self._routing_keys = routing_keys
        self._handler = handler
        self._prefetch = prefetch

    def work(self) -> None:
        with channel(self._amqp_url) as incoming:
            declare_subscription(incoming, self._queue, self._routing_keys)
            incoming.basic_qos(prefetch_count=self._prefetch)
            self.connected()
            log.info("consuming %s", self._queue)
            for method, properties, body in incoming.consume(self._queue, inactivity_timeout=0.5):
                if self._stop.is_set():
                    break
                if method is not None:
                    self._deliver(incoming, method, properties, body)

    def _deliver(
        self,
        channel: BlockingChannel,
        method: pika.spec.Basic.Deliver,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        headers = properties.headers or {}
        delivery = Delivery(
            message_id=properties.message_id or "",
            message_type=properties.type or "",
            routing_key=method.routing_key,
            body=body,
            correlation_id=properties.correlation_id or "",
            attempt=int(headers.get("x-delivery-count", 0)) + 1,
        )
        assert self._loop is not None
        try:
            if not delivery.message_id:
                raise PoisonMessage("message has no message_id, so it cannot be deduplicated")
            future = asyncio.run_coroutine_threadsafe(self._handle(delivery), self._loop)
            future.result(HANDLER_TIMEOUT_SECONDS)
        except PoisonMessage as exc:
            log.error("dead-lettering %s (%s): %s", delivery.message_id, delivery.message_type, exc)
            metrics.MESSAGES_CONSUMED.labels(self._queue, "dead_lettered").inc()
            channel.basic_nack(method.delivery_tag, requeue=False)
        except Exception:
            log.exception(
                "handling %s failed (attempt %d of %d)",
                delivery.message_id,
                delivery.attempt,
                MAX_DELIVERIES,
            )
            metrics.MESSAGES_CONSUMED.labels(self._queue, "retried").inc()
            # Back off before the broker redelivers; past the limit it dead-letters.
            time.sleep(min(0.25 * 2**delivery.attempt, 15.0))
            channel.basic_nack(method.delivery_tag, requeue=True)
        else:
            metrics.MESSAGES_CONSUMED.labels(self._queue, "handled").inc()
            channel.basic_ack(method.delivery_tag)

    async def _handle(self, delivery: Delivery) -> None:
        token = request_id_var.set(delivery.correlation_id or delivery.message_id)
        try:
            await self._handler(delivery)
        finally:
            request_id_var.reset(token)
