"""A cancelled event's refunds as the booking service reports them (the event
service's subscription to `booking.event_refunds`), shown on the Event."""

from __future__ import annotations

import uuid

from google.protobuf.message import DecodeError

from event.service import EventUseCases
from runtime import timestamps
from runtime.consumer import Delivery, PoisonMessage
from ticketing.booking.v1 import messages_pb2

MESSAGE_TYPE = "ticketing.booking.v1.EventRefundProgress"


class RefundProgress:
    QUEUE = "event.refund_progress"
    ROUTING_KEYS = ("booking.event_refunds",)

    def __init__(self, events: EventUseCases) -> None:
        self._events = events

    async def record(self, deliveries: list[Delivery]) -> dict[str, PoisonMessage]:
        """Each report moves the counts on; they only grow, so a redelivered or
        late report changes nothing and needs no dedupe."""
        poison: dict[str, PoisonMessage] = {}
        for delivery in deliveries:
            try:
                if delivery.message_type != MESSAGE_TYPE:
                    raise PoisonMessage(f"no refund progress in {delivery.message_type!r}")
                try:
                    report = messages_pb2.EventRefundProgress.FromString(delivery.body)
                    event_id = uuid.UUID(report.event_id)
                except (DecodeError, ValueError) as exc:
                    raise PoisonMessage(f"unreadable refund progress: {exc}") from exc
            except PoisonMessage as exc:
                poison[delivery.message_id] = exc
                continue
            await self._events.record_refund_progress(
                event_id,
                report.bookings_total,
                report.bookings_refunded,
                timestamps.from_proto(report.finish_time)
                if report.HasField("finish_time")
                else None,
            )
        return poison
