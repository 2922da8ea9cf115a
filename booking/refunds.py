"""Refunding a cancelled event: every confirmed booking refunded, cancelled and
its buyer emailed, each through the saga's own cancellation.

The event service announces `event.cancelled` once per event. The handler here
records the event (again and again is once: the event id is the key) and wakes
the worker. The worker marks the event's confirmed bookings as going with it,
leases them in batches, and cancels each with BookingUseCases.refund_and_cancel:
the refund is idempotent by key and the settlement moves a CONFIRMED booking
only, so however often a booking is tried it is refunded and announced (its
email) once. Progress goes out as `booking.event_refunds` for the Event to show.

All of it lives in the database, so a worker killed mid-way loses nothing: the
next start, or another replica, goes on once the dead one's leases lapse.
While payment or the event service is away the refunds fail and are tried
again; while RabbitMQ is, the outbox keeps the emails and reports. The event
is done when every marked booking is cancelled and none of it is still being
paid (a booking paid as the event was cancelled confirms, then goes too, or
fails at the sale, which a cancelled event refuses).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

from google.protobuf.message import DecodeError

from booking.domain import Booking
from booking.gateways import EventRefundLedger
from booking.service import BookingUseCases
from runtime import timestamps
from runtime.consumer import Delivery, PoisonMessage
from runtime.errors import ServiceError
from runtime.tasks import running
from ticketing.event.v1 import messages_pb2 as event_messages

log = logging.getLogger(__name__)

MESSAGE_TYPE = "ticketing.event.v1.EventCancelled"


class EventRefunds:
    QUEUE = "booking.event_cancellations"
    ROUTING_KEYS = ("event.cancelled",)

    def __init__(
        self,
        ledger: EventRefundLedger,
        bookings: BookingUseCases,
        lease_seconds: float,
        concurrency: int,
        batch_size: int = 64,
    ) -> None:
        self._ledger = ledger
        self._bookings = bookings
        # A leased booking is someone's for this long; then anyone may try it
        # again (its worker died, or its refund failed).
        self._lease_seconds = lease_seconds
        self._slots = asyncio.Semaphore(concurrency)
        self._batch_size = batch_size
        self._wake = asyncio.Event()

    async def record(self, deliveries: list[Delivery]) -> dict[str, PoisonMessage]:
        """Records each cancelled event for the worker (the consumer's handler)."""
        poison: dict[str, PoisonMessage] = {}
        for delivery in deliveries:
            try:
                cancelled = _parse(delivery)
            except PoisonMessage as exc:
                poison[delivery.message_id] = exc
                continue
            if await self._ledger.add(
                uuid.UUID(cancelled.event.event_id),
                cancelled.reason,
                timestamps.from_proto(cancelled.cancel_time),
            ):
                log.info("event %s cancelled: refunding its bookings", cancelled.event.event_id)
        self._wake.set()
        return poison

    async def refund_all(self) -> int:
        """One pass over every unfinished cancellation; how many bookings it refunded."""
        refunded = 0
        for event_id, reason in await self._ledger.unfinished():
            refunded += await self._refund_event(event_id, reason)
        return refunded

    async def _refund_event(self, event_id: uuid.UUID, reason: str) -> int:
        await self._ledger.mark(event_id, reason)
        refunded = 0
        while claimed := await self._ledger.claim(event_id, self._lease_seconds, self._batch_size):
            outcomes = await asyncio.gather(*(self._refund(booking) for booking in claimed))
            refunded += sum(outcomes)
            await self._report(event_id)
            if not all(outcomes):
                break  # something is away; the leases lapse and the next pass retries
        await self._report(event_id)
        return refunded

    async def _report(self, event_id: uuid.UUID) -> None:
        total, refunded, unsettled = await self._ledger.progress(event_id)
        finished = total == refunded and unsettled == 0
        if await self._ledger.report(event_id, total, refunded, finished) and finished:
            log.info("event %s: all %d bookings refunded", event_id, total)

    async def _refund(self, booking: Booking) -> bool:
        async with self._slots:
            try:
                await self._bookings.refund_and_cancel(booking)
            except ServiceError as error:
                if error.reason == "BOOKING_NOT_CANCELLABLE":
                    return True  # someone else cancelled it meanwhile
                log.warning("refund of %s not through yet: %s", booking.booking_id, error)
                return False
            return True

    @contextlib.asynccontextmanager
    async def running(self, interval_seconds: float) -> AsyncIterator[None]:
        """Refunds whatever is to refund, on every cancellation and every interval
        (for leases that lapsed and bookings that settled meanwhile)."""

        async def loop() -> None:
            while True:
                self._wake.clear()
                try:
                    await self.refund_all()
                except Exception:
                    log.exception("event refunds failed; trying again")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), interval_seconds)

        async with running(loop, "event-refunds"):
            yield


def _parse(delivery: Delivery) -> event_messages.EventCancelled:
    if delivery.message_type != MESSAGE_TYPE:
        raise PoisonMessage(f"no event cancellation in {delivery.message_type!r}")
    try:
        cancelled = event_messages.EventCancelled.FromString(delivery.body)
        uuid.UUID(cancelled.event.event_id)
    except (DecodeError, ValueError) as exc:
        raise PoisonMessage(f"unreadable {delivery.message_type}: {exc}") from exc
    return cancelled
