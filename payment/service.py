"""Payment use cases: charge, refund, look up, read; each one transaction."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from payment import domain
from payment.domain import ChargeOrder, Payment
from payment.repository import Charges, Payments
from runtime.errors import bad_field, not_found, parse_uuid
from runtime.identity import Caller

log = logging.getLogger(__name__)


class PaymentUseCases:
    def __init__(self, engine: AsyncEngine, charges: Charges) -> None:
        self._engine = engine
        self._charges = charges

    async def charge(self, order: ChargeOrder) -> Payment:
        """The payment for the order's idempotency key, charging the card only if new."""
        charge = domain.check_charge(order, datetime.now(UTC).date())
        now = datetime.now(UTC)
        attempt = domain.process(charge, uuid.uuid4(), now)
        # A concurrent call with the same key may have got here too; the database
        # keeps the first and every caller gets that one. The simulated processor
        # moves no money, so a losing attempt's answer is simply dropped.
        stored = await self._charges.add_or_get(attempt)
        domain.ensure_same_charge(stored, charge)
        # The payments table is the record; a log line per charge is for debugging.
        if stored.payment_id == attempt.payment_id:
            log.debug(
                "charge %s %s %d %s",
                stored.payment_id,
                stored.state.name,
                stored.amount_minor,
                stored.currency,
            )
        return stored

    async def refund(self, idempotency_key: str, payment_id: str) -> Payment:
        """Gives back the whole amount of a successful payment, at most once."""
        target = domain.check_refund(idempotency_key, payment_id)
        async with self._engine.begin() as conn:
            repo = Payments(conn)
            # Locked, so two refunds of one payment cannot both apply.
            payment = await repo.get(target, for_update=True)
            if payment is None:
                raise not_found("payment", payment_id)
            refunded_earlier = await repo.refunded_by_key(idempotency_key)
            if refunded_earlier is not None and refunded_earlier != payment.payment_id:
                raise domain.key_reused("refund", payment.payment_id)
            if not domain.has_money_to_refund(payment):
                return payment  # refunded already: a refund never exceeds the charge
            refunded = await repo.refund_in_full(payment, idempotency_key, datetime.now(UTC))
            if refunded is None:  # the key went to another payment's refund meanwhile
                raise domain.key_reused("refund", payment.payment_id)
        log.info("refunded %s", payment_id)
        return refunded

    async def lookup(self, idempotency_key: str) -> Payment:
        """The payment made with this key; lets a caller settle a charge it lost track of."""
        if not idempotency_key:
            raise bad_field("idempotency_key", "is required")
        async with self._engine.connect() as conn:
            payment = await Payments(conn).by_key(idempotency_key)
        if payment is None:
            raise not_found("payment", idempotency_key)
        return payment

    async def get(self, who: Caller, payment_id: str) -> Payment:
        """The caller's own payment, or any payment for an admin."""
        wanted = parse_uuid(payment_id, "payment_id")
        async with self._engine.connect() as conn:
            payment = await Payments(conn).get(wanted)
        # Another user's payment is "not found": ids cannot be probed.
        if payment is None or not (who.is_admin or str(payment.user_id) == who.user_id):
            raise not_found("payment", payment_id)
        return payment
