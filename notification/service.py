"""Notification use cases: record what a message calls for, deliver it, list it.

A message is acked once its notification is recorded (the record is the
dedupe: one row per message id), and delivery happens afterwards, retried
with backoff while the mail server is away. So a redelivered message never
sends a second email; the one window left is a crash between the mail
server accepting an email and the row being marked sent, which resends it
(at-least-once; the stable Message-ID lets mail clients fold it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from notification import domain, emails
from notification.domain import Notification, State
from notification.mailer import Mailer
from notification.repository import EmailQueue
from runtime import failpoints, pagination
from runtime.consumer import Delivery, PoisonMessage
from runtime.identity import Caller
from runtime.tasks import running
from runtime.tickets import TicketSigner

log = logging.getLogger(__name__)

# A batch's emails are all composed before the first is sent: 50 PDFs at once
# took notification's peak RSS past 150 MB in a sale.
SEND_BATCH = 25
LEASE_SECONDS = 120


class NotificationUseCases:
    def __init__(
        self, engine: AsyncEngine, mailer: Mailer, signer: TicketSigner, sender_address: str
    ) -> None:
        self._engine = engine
        self._mailer = mailer
        self._signer = signer
        self._sender_address = sender_address
        self._wake = asyncio.Event()

    async def record(self, deliveries: list[Delivery]) -> dict[str, PoisonMessage]:
        """Handles a batch of broker messages in order; the ones it never can, by id.

        The notifications between two account deletions are recorded in one
        transaction: a transaction costs the service more than its rows. Each
        deletion has one of its own, as it locks the table against recordings."""
        poison: dict[str, PoisonMessage] = {}
        drafts: list[Notification] = []
        for delivery in deliveries:
            try:
                if delivery.message_type == domain.USER_DELETED:
                    await self._record_all(drafts)
                    drafts = []
                    await self._erase(domain.deleted_user(delivery.body))
                else:
                    drafts.append(_draft(delivery))
            except PoisonMessage as exc:
                poison[delivery.message_id] = exc
        await self._record_all(drafts)
        failpoints.crash_if_armed("notification_after_record")
        return poison

    async def _record_all(self, drafts: list[Notification]) -> None:
        if not drafts:
            return
        async with self._engine.begin() as conn:
            queue = EmailQueue(conn)
            firsts = [await queue.record(draft) for draft in drafts]
        for draft, first in zip(drafts, firsts, strict=True):
            if not first:
                log.info("message %s seen before; nothing to do", draft.message_id)
        if any(firsts):
            self._wake.set()

    async def _erase(self, user_id: uuid.UUID) -> None:
        async with self._engine.begin() as conn:
            erased = await EmailQueue(conn).erase_user(user_id)
        log.info("user %s deleted: erased %d notifications", user_id, erased)

    async def deliver_due(self) -> int:
        """Sends one batch of due emails; how many were attempted."""
        async with self._engine.begin() as conn:
            due = await EmailQueue(conn).claim_due(SEND_BATCH, LEASE_SECONDS)
        if not due:
            return 0
        # Rendering (PDFs) and SMTP are blocking work: keep them off the event loop.
        outcomes = await asyncio.to_thread(self._compose_and_send, due)
        async with self._engine.begin() as conn:
            emails = EmailQueue(conn)
            await emails.mark_sent(
                [n.notification_id for n, error in zip(due, outcomes, strict=True) if error is None]
            )
            for notification, error in zip(due, outcomes, strict=True):
                if error is not None:
                    log.warning(
                        "email %s not sent (attempt %d): %s",
                        notification.notification_id,
                        notification.attempts + 1,
                        error,
                    )
                    await emails.mark_failed_attempt(notification, error)
        return len(due)

    def _compose_and_send(self, due: list[Notification]) -> list[str | None]:
        return self._mailer.send(
            [emails.compose(n, self._sender_address, self._signer) for n in due]
        )

    @contextlib.asynccontextmanager
    async def delivering(self, poll_seconds: float = 1.0) -> AsyncIterator[None]:
        """Delivers due emails for as long as the service runs, then hangs up on
        the mail server (the connection is kept between batches)."""

        async def loop() -> None:
            while True:
                self._wake.clear()  # before looking, so no wake-up is missed
                try:
                    if await self.deliver_due():
                        continue
                except Exception:
                    log.exception("delivery round failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), poll_seconds)

        async with running(loop, "email delivery"):
            yield
        await asyncio.to_thread(self._mailer.close)

    async def list(
        self, who: Caller, page_size: int, page_token: str
    ) -> tuple[list[Notification], str]:
        limit = pagination.page_size(page_size)
        before = pagination.decode_keyset(page_token)
        async with self._engine.connect() as conn:
            found = await EmailQueue(conn).page(uuid.UUID(who.user_id), limit + 1, before)
        return pagination.keyset_page(found, limit, lambda n: (n.create_time, n.notification_id))


def _draft(delivery: Delivery) -> Notification:
    """The notification a message calls for (PoisonMessage if it can call for none)."""
    message, kind = domain.parse(delivery.message_type, delivery.body)
    recipient, user_id = domain.addressee(message)
    booking_id, event_id = domain.about(message)
    return Notification(
        uuid.uuid4(),
        uuid.UUID(user_id),
        kind,
        recipient,
        domain.subject(message, kind),
        delivery.message_id,
        delivery.message_type,
        delivery.body,
        State.PENDING,
        0,
        datetime.now().astimezone(),
        booking_id=booking_id,
        event_id=event_id,
    )
