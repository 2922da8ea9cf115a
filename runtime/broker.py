"""What the outbox relay and the consumers share: a RabbitMQ channel, and a
background thread that reconnects with backoff whenever RabbitMQ or
PostgreSQL goes away."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator

import pika
import pika.exceptions
import psycopg
from pika.adapters.blocking_connection import BlockingChannel

log = logging.getLogger(__name__)

EXCHANGE = "ticketing.events"
# When a message's outbox row was written, in milliseconds since the epoch: the
# AMQP timestamp property holds whole seconds only, too coarse for the lag metric.
CREATE_TIME_HEADER = "x-create-time-ms"
MAX_BACKOFF_SECONDS = 10.0


@contextlib.contextmanager
def channel(amqp_url: str) -> Iterator[BlockingChannel]:
    """A channel on a fresh connection, with the exchange declared; closed on exit."""
    params = pika.URLParameters(amqp_url)
    params.heartbeat = 30
    params.socket_timeout = 5
    params.blocked_connection_timeout = 30
    connection = pika.BlockingConnection(params)
    try:
        opened = connection.channel()
        opened.exchange_declare(EXCHANGE, "topic", durable=True)
        yield opened
    finally:
        with contextlib.suppress(pika.exceptions.AMQPError, OSError):
            connection.close()


class BackgroundWorker:
    """A thread for as long as it is entered (as an async context manager),
    running `work` again, after a growing pause, whenever a connection drops."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._backoff = 0.5

    async def __aenter__(self) -> BackgroundWorker:
        self._loop = asyncio.get_running_loop()
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 10)

    def work(self) -> None:
        """Connects and works until the connection drops or the worker stops."""
        raise NotImplementedError

    def connected(self) -> None:
        """Called by `work` once connected: the next outage starts a fresh backoff."""
        self._backoff = 0.5

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.work()
            except (pika.exceptions.AMQPError, psycopg.Error, OSError) as exc:
                log.warning("%s paused, retrying in %.1fs: %r", self._name, self._backoff, exc)
            except Exception:
                log.exception("%s crashed; restarting in %.1fs", self._name, self._backoff)
            self._stop.wait(self._backoff)
            self._backoff = min(self._backoff * 2, MAX_BACKOFF_SECONDS)
