"""Payment use cases: charge, refund, look up; each idempotent by key."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, date, datetime

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from payment import domain
from payment.domain import Payment, State
from payment.repository import Payments
from runtime.errors import ServiceError, bad_field, not_found, parse_uuid
from runtime.identity import Caller

log = logging.getLogger(__name__)


class PaymentUseCases:
    def __init__(self, engine: AsyncEngine, latency_seconds: float = 0.0) -> None:
        self._engine = engine
        # Lets benchmarks model a real processor's round trip.
        self._latency_seconds = latency_seconds

    async def charge(
        self,
        idempotency_key: str,
        user_id: str,
        amount_minor: int,
        currency: str,
        card_number: str,
        exp_month: int,
        exp_year: int,
        cvc: str,
        reference: str,
        has_amount: bool,
        has_card: bool,
    ) -> Payment:
        card = domain.check_charge(
            idempotency_key,
            user_id,
            amount_minor,
            currency,
            card_number,
            exp_month,
            exp_year,
            cvc,
            date.today(),
            has_amount,
            has_card,
        )
        payer = parse_uuid(user_id, "user_id")
        if self._latency_seconds:
            await asyncio.sleep(self._latency_seconds)
        now = datetime.now(UTC)
        attempt = Payment(
            uuid.uuid4(),
            idempotency_key,
            payer,
            reference,
            amount_minor,
            currency,
            State.DECLINED if card.decline_code else State.SUCCEEDED,
            card.brand,
            card.last4,
            card.decline_code,
            0,
            now,
            now,
        )
        async with self._engine.begin() as conn:
            stored = await Payments(conn).add(attempt)
        if (stored.user_id, stored.amount_minor, stored.currency) != (
            payer,
            amount_minor,
            currency,
        ):
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "IDEMPOTENCY_KEY_REUSED",
                "this idempotency key was used for a different charge",
                {"payment_id": str(stored.payment_id)},
            )
        if stored.payment_id == attempt.payment_id:
            log.info(
                "charge %s %s %d %s",
                stored.payment_id,
                stored.state.name,
                stored.amount_minor,
                stored.currency,
            )
        return stored

    async def refund(self, idempotency_key: str, payment_id: str) -> Payment:
        if not idempotency_key:
            raise bad_field("idempotency_key", "is required")
        key = parse_uuid(payment_id, "payment_id")
        if self._latency_seconds:
            await asyncio.sleep(self._latency_seconds)
        async with self._engine.begin() as conn:
            repo = Payments(conn)
            # Locked, so two refunds of one payment cannot both apply.
            payment = await repo.get(key, for_update=True)
            if payment is None:
                raise not_found("payment", payment_id)
            if payment.state is State.DECLINED:
                raise ServiceError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "PAYMENT_NOT_REFUNDABLE",
                    "a declined payment took no money",
                    {"payment_id": payment_id},
                )
            if payment.state is State.REFUNDED or await repo.refund_exists(idempotency_key):
                return payment  # never more than the charge
            refunded = await repo.refund_in_full(payment, idempotency_key)
        log.info("refunded %s", payment_id)
        return refunded

    async def lookup(self, idempotency_key: str) -> Payment:
        if not idempotency_key:
            raise bad_field("idempotency_key", "is required")
        async with self._engine.connect() as conn:
            payment = await Payments(conn).by_key(idempotency_key)
        if payment is None:
            raise not_found("payment", idempotency_key)
        return payment

    async def get(self, who: Caller, payment_id: str) -> Payment:
        async with self._engine.connect() as conn:
            payment = await Payments(conn).get(parse_uuid(payment_id, "payment_id"))
        # Another user's payment is "not found": ids cannot be probed.
        if payment is None or not (who.is_admin or str(payment.user_id) == who.user_id):
            raise not_found("payment", payment_id)
        return payment
