"""The subscriber's runtime against the real RabbitMQ: a batch that fails waits
out its backoff on a timer while the consumer goes on with the next messages;
each handled message's lag behind its outbox row is measured."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pika
from prometheus_client import REGISTRY

from runtime.broker import CREATE_TIME_HEADER, EXCHANGE
from runtime.consumer import Consumer, Delivery, PoisonMessage
from scripts.mesh import Mesh
from tests.support import wait_for

BACKOFF_SECONDS = 60.0  # far longer than the test may take: a blocked consumer fails it


def publish(amqp_url: str, routing_key: str, message_id: str, **properties: Any) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()  # else the message may be lost as the connection closes
        channel.basic_publish(
            EXCHANGE,
            routing_key,
            b"",
            pika.BasicProperties(message_id=message_id, type="test.Probe", **properties),
            mandatory=True,
        )
    finally:
        connection.close()


def test_a_failing_batch_backs_off_without_holding_up_the_next(mesh: Mesh) -> None:
    amqp_url = mesh.env["AMQP_URL"]
    queue = f"test.backoff.{uuid.uuid4().hex[:8]}"
    attempts: list[tuple[str, int]] = []

    async def scenario() -> None:
        first_failed = asyncio.Event()
        second_handled = asyncio.Event()

        async def handle(deliveries: list[Delivery]) -> dict[str, PoisonMessage]:
            for delivery in deliveries:
                attempts.append((delivery.message_id, delivery.attempt))
                if delivery.message_id == "first":
                    first_failed.set()
                    raise RuntimeError("the database is away, say")
                second_handled.set()
            return {}

        consumer = Consumer(amqp_url, queue, [queue], handle, retry_delay=lambda _: BACKOFF_SECONDS)
        async with consumer:
            await asyncio.to_thread(
                wait_for, lambda: declared(amqp_url, queue), f"{queue} to be declared"
            )
            await asyncio.to_thread(publish, amqp_url, queue, "first")
            await asyncio.wait_for(first_failed.wait(), 20)
            await asyncio.to_thread(publish, amqp_url, queue, "second")
            # Handled while the first still waits out its minute.
            await asyncio.wait_for(second_handled.wait(), 20)

    try:
        asyncio.run(scenario())
    finally:
        delete_queues(amqp_url, queue)
    assert attempts == [("first", 1), ("second", 1)]


def test_the_lag_behind_each_outbox_row_is_measured(mesh: Mesh) -> None:
    amqp_url = mesh.env["AMQP_URL"]
    queue = f"test.lag.{uuid.uuid4().hex[:8]}"
    handled: list[str] = []

    async def scenario() -> None:
        async def handle(deliveries: list[Delivery]) -> dict[str, PoisonMessage]:
            handled.extend(d.message_id for d in deliveries)
            return {}

        async with Consumer(amqp_url, queue, [queue], handle):
            await asyncio.to_thread(
                wait_for, lambda: declared(amqp_url, queue), f"{queue} to be declared"
            )
            now = time.time()
            # As the relay sends a row written 100 s ago: to the millisecond.
            headers = {CREATE_TIME_HEADER: int((now - 100) * 1000)}
            await asyncio.to_thread(publish, amqp_url, queue, "header", headers=headers)
            # As an older relay did: the AMQP timestamp alone, in whole seconds.
            await asyncio.to_thread(publish, amqp_url, queue, "stamp", timestamp=int(now - 1000))
            # Not from an outbox: there is nothing to measure.
            await asyncio.to_thread(publish, amqp_url, queue, "bare")
            await asyncio.to_thread(wait_for, lambda: len(handled) == 3, "three messages")

    try:
        asyncio.run(scenario())
    finally:
        delete_queues(amqp_url, queue)

    def sample(suffix: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(
            f"broker_message_lag_seconds{suffix}", {"queue": queue, **labels}
        )

    assert sample("_count") == 2
    assert sample("_bucket", le="60.0") == 0
    assert sample("_bucket", le="300.0") == 1  # 100 s behind
    assert 1100 <= sample("_sum") < 1100 + 60  # and 1000 (or up to a second more)


def delete_queues(amqp_url: str, queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.queue_delete(queue)
    channel.queue_delete(f"{queue}.dead")
    connection.close()


def declared(amqp_url: str, queue: str) -> bool:
    """Whether the consumer has declared its queue (publishing before would be
    unroutable)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        connection.channel().queue_declare(queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if connection.is_open:
            connection.close()
