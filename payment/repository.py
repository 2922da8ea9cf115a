"""The payment database: payments (one per idempotency key) and refunds."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from payment.domain import Payment, State
from runtime.pg import Database

metadata = sa.MetaData()

payments = sa.Table(
    "payments",
    metadata,
    sa.Column("payment_id", pg.UUID(as_uuid=True), primary_key=True),
    # The same key is the same payment: retries never charge twice.
    sa.Column("idempotency_key", sa.Text, nullable=False, unique=True),
    sa.Column("user_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("reference", sa.Text, nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("state", sa.SmallInteger, nullable=False),
    sa.Column("card_brand", sa.Text, nullable=False),
    sa.Column("card_last4", sa.Text, nullable=False),
    sa.Column("decline_code", sa.Text, nullable=False, server_default=""),
    sa.Column("refunded_minor", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("refunded_minor BETWEEN 0 AND amount_minor", name="refund_within_charge"),
)

refunds = sa.Table(
    "refunds",
    metadata,
    sa.Column("refund_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column(
        "payment_id",
        pg.UUID(as_uuid=True),
        sa.ForeignKey("payments.payment_id"),
        nullable=False,
        index=True,
    ),
    sa.Column("idempotency_key", sa.Text, nullable=False, unique=True),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column(
        "create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)


# A Payment's fields are the table's columns, one for one.
def _payment(row: sa.Row) -> Payment:
    return Payment(**{**row._mapping, "state": State(row.state)})


_COLUMNS = [f.name for f in dataclasses.fields(Payment)]
_ADD_CHARGE = (
    f"INSERT INTO payments ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join(f'%({c})s' for c in _COLUMNS)}) "
    "ON CONFLICT (idempotency_key) DO NOTHING RETURNING *"
)


class Charges:
    """The charge on the sale path, one autocommit statement (runtime.pg)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add_or_get(self, payment: Payment) -> Payment:
        """Stores the payment, or returns the one already stored under its key.

        Concurrent calls with one key all insert; the unique key lets exactly one
        row in and makes the others wait for it, then they all read that winner.
        """
        row = await self._db.fetchone(_ADD_CHARGE, _columns(payment))
        if row is None:
            row = await self._db.fetchone(
                "SELECT * FROM payments WHERE idempotency_key = %s", (payment.idempotency_key,)
            )
            assert row is not None, "the row that won the insert is committed and visible"
        return Payment(**{**row._asdict(), "state": State(row.state)})


def _columns(payment: Payment) -> dict[str, object]:
    # Not dataclasses.asdict: it deep-copies every field, a tenth of a charge's CPU.
    return {**{name: getattr(payment, name) for name in _COLUMNS}, "state": payment.state.value}


class Payments:
    """Queries on one connection, inside the caller's transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def by_key(self, idempotency_key: str) -> Payment | None:
        row = (
            await self._conn.execute(
                sa.select(payments).where(payments.c.idempotency_key == idempotency_key)
            )
        ).first()
        return _payment(row) if row else None

    async def get(self, payment_id: uuid.UUID, for_update: bool = False) -> Payment | None:
        query = sa.select(payments).where(payments.c.payment_id == payment_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).first()
        return _payment(row) if row else None

    async def refunded_by_key(self, idempotency_key: str) -> uuid.UUID | None:
        """The payment a refund with this key was made for, if one was."""
        return await self._conn.scalar(
            sa.select(refunds.c.payment_id).where(refunds.c.idempotency_key == idempotency_key)
        )

    async def refund_in_full(
        self, payment: Payment, idempotency_key: str, now: datetime
    ) -> Payment | None:
        """Records the refund and marks the payment refunded; None if a concurrent
        refund of another payment took the key first (then nothing is written)."""
        recorded = await self._conn.scalar(
            pg.insert(refunds)
            .values(
                refund_id=uuid.uuid4(),
                payment_id=payment.payment_id,
                idempotency_key=idempotency_key,
                amount_minor=payment.amount_minor,
                create_time=now,
            )
            .on_conflict_do_nothing(index_elements=[refunds.c.idempotency_key])
            .returning(refunds.c.refund_id)
        )
        if recorded is None:
            return None
        row = (
            await self._conn.execute(
                payments.update()
                .where(payments.c.payment_id == payment.payment_id)
                .values(
                    state=State.REFUNDED.value,
                    refunded_minor=payment.amount_minor,
                    update_time=now,
                )
                .returning(payments)
            )
        ).one()
        return _payment(row)
