"""Erasing a deleted account's email from the bookings.

The auth service announces `user.deleted` once an account is gone. The
bookings stay, for accounting, under the user id (random, and no account's
any more); only the buyer's email goes, from each booking and from the sent
copies of the booking's messages the outbox keeps for a while. A message still
waiting in the outbox goes out as it is (its subscribers need it: the sales
report counts it, and the notification service, told of the deletion too,
keeps no address from it); the handler then fails, so the broker brings the
deletion back once that message is sent and its copy can be erased. Each
step matches only what is left to erase, so a redelivery does what is left.
"""

from __future__ import annotations

import logging
import uuid

from google.protobuf.message import DecodeError

from booking.repository import PgAccountErasure
from runtime.consumer import Delivery, PoisonMessage
from ticketing.auth.v1 import messages_pb2 as auth_messages

log = logging.getLogger(__name__)

MESSAGE_TYPE = auth_messages.UserDeleted.DESCRIPTOR.full_name


class MessagesInFlight(Exception):
    """Messages about the user are still to be sent; their copies are erased later."""


class AccountErasure:
    QUEUE = "booking.user_deletions"
    ROUTING_KEYS = ("user.deleted",)

    def __init__(self, ledger: PgAccountErasure) -> None:
        self._ledger = ledger

    async def record(self, deliveries: list[Delivery]) -> dict[str, PoisonMessage]:
        """Erases each deleted account's email (the consumer's handler)."""
        poison: dict[str, PoisonMessage] = {}
        waiting = []
        for delivery in deliveries:
            try:
                user_id = _parse(delivery)
            except PoisonMessage as exc:
                poison[delivery.message_id] = exc
                continue
            bookings, unsent = await self._ledger.erase_user(user_id)
            log.info("user %s deleted: erased the email of %d bookings", user_id, bookings)
            if unsent:
                waiting.append(user_id)
        if waiting:
            raise MessagesInFlight(f"outbox messages about {waiting} not sent yet")
        return poison


def _parse(delivery: Delivery) -> uuid.UUID:
    if delivery.message_type != MESSAGE_TYPE:
        raise PoisonMessage(f"no account deletion in {delivery.message_type!r}")
    try:
        return uuid.UUID(auth_messages.UserDeleted.FromString(delivery.body).user_id)
    except (DecodeError, ValueError) as exc:
        raise PoisonMessage(f"unreadable {delivery.message_type}: {exc}") from exc
