"""The per-event sales report, kept from booking messages (the event
service's own subscription to `ticketing.events`): sales, refunds and
check-ins per tier, with the seats held now (from Redis) beside them."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from sqlalchemy.ext.asyncio import AsyncEngine

from event.domain import EventInfo, Tier
from event.repository import SaleChange, SalePath, SalesBook, TierSales
from event.service import EventUseCases
from runtime.consumer import Delivery, PoisonMessage
from runtime.errors import permission_denied
from runtime.identity import Caller
from ticketing.booking.v1 import messages_pb2

MESSAGE_TYPES = {
    "ticketing.booking.v1.BookingConfirmed": messages_pb2.BookingConfirmed,
    "ticketing.booking.v1.BookingCancelled": messages_pb2.BookingCancelled,
    "ticketing.booking.v1.TicketCheckedIn": messages_pb2.TicketCheckedIn,
}


class SalesReports:
    QUEUE = "event.sales"
    ROUTING_KEYS = ("booking.confirmed", "booking.cancelled", "booking.checked_in")

    def __init__(self, engine: AsyncEngine, sale_path: SalePath, events: EventUseCases) -> None:
        self._engine = engine
        self._sale_path = sale_path
        self._events = events

    async def record(self, deliveries: list[Delivery]) -> dict[str, PoisonMessage]:
        """Moves the report by a batch of booking messages in one statement."""
        poison: dict[str, PoisonMessage] = {}
        changes: list[SaleChange] = []
        for delivery in {d.message_id: d for d in deliveries}.values():
            try:
                changes += self._changes(delivery)
            except PoisonMessage as exc:
                poison[delivery.message_id] = exc
        # The dedupe rows and the report move together, so a redelivered
        # message is counted once.
        await self._sale_path.record_sales(changes)
        return poison

    @staticmethod
    def _changes(delivery: Delivery) -> list[SaleChange]:
        if delivery.message_type not in MESSAGE_TYPES:
            raise PoisonMessage(f"no sales effect for {delivery.message_type!r}")
        try:
            message = MESSAGE_TYPES[delivery.message_type].FromString(delivery.body)
            if isinstance(message, messages_pb2.TicketCheckedIn):
                return [SalesReports._check_in(delivery.message_id, message)]
            booking = message.booking
            event_id = uuid.UUID(booking.event_id)
            by_tier: dict[Tier, list[int]] = defaultdict(list)
            for seat in booking.seats:
                by_tier[Tier(seat.tier)].append(seat.price.amount_minor)
        except (DecodeError, ValueError) as exc:
            raise PoisonMessage(f"unreadable {delivery.message_type}: {exc}") from exc
        sold = isinstance(message, messages_pb2.BookingConfirmed)
        return [
            SaleChange(
                delivery.message_id,
                event_id,
                tier,
                booking.total.currency_code,
                sold=len(prices) if sold else -len(prices),
                refunded=0 if sold else len(prices),
                gross_minor=sum(prices) if sold else 0,
                refunded_minor=0 if sold else sum(prices),
            )
            for tier, prices in by_tier.items()
        ]

    @staticmethod
    def _check_in(message_id: str, message: messages_pb2.TicketCheckedIn) -> SaleChange:
        # The seat's price carries the currency, so a check-in that arrives
        # before its booking's confirmation still makes a valid report line.
        return SaleChange(
            message_id,
            uuid.UUID(message.event_id),
            Tier(message.seat.tier),
            message.seat.price.currency_code,
            sold=0,
            refunded=0,
            gross_minor=0,
            refunded_minor=0,
            checked_in=1,
        )

    async def report(self, who: Caller, event_id: str) -> SalesReport:
        info = await self._events.event_info(event_id)
        if not (who.is_admin or str(info.organizer_id) == who.user_id):
            raise permission_denied("only the event's organizer or an admin sees its sales")
        async with self._engine.connect() as conn:
            tiers = await SalesBook(conn).report(info.event_id)
        return SalesReport(info, tiers, await self._events.held_by_tier(info))


@dataclass(frozen=True)
class SalesReport:
    info: EventInfo
    # The tiers with any sale or check-in.
    tiers: list[TierSales]
    # Every tier of the event.
    held: dict[Tier, int]
