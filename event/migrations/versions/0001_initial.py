"""events, tiers, seats and the sales ledger

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("event_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("venue", sa.Text, nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("organizer_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("events_by_start", "events", ["starts_at", "event_id"])
    op.create_table(
        "event_tiers",
        sa.Column(
            "event_id", pg.UUID(as_uuid=True), sa.ForeignKey("events.event_id"), primary_key=True
        ),
        sa.Column("tier", sa.SmallInteger, primary_key=True),
        sa.Column("price_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("seats_per_row", sa.Integer, nullable=False),
        sa.Column("sold", sa.Integer, nullable=False, server_default="0"),
        sa.CheckConstraint("sold >= 0 AND sold <= rows * seats_per_row", name="tier_sold_in_range"),
    )
    op.create_table(
        "seats",
        sa.Column("event_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("tier", sa.SmallInteger, primary_key=True),
        sa.Column("row", sa.Integer, primary_key=True),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("status", sa.Text, nullable=False, server_default="AVAILABLE"),
        sa.Column("booking_id", pg.UUID(as_uuid=True)),
        sa.Column("fence", sa.BigInteger, nullable=False, server_default="0"),
        sa.ForeignKeyConstraint(["event_id", "tier"], ["event_tiers.event_id", "event_tiers.tier"]),
        sa.CheckConstraint("status IN ('AVAILABLE', 'SOLD')", name="seat_status_valid"),
    )
    op.create_index(
        "seats_by_booking",
        "seats",
        ["booking_id"],
        postgresql_where=sa.text("booking_id IS NOT NULL"),
    )
    op.create_table(
        "seat_sales",
        sa.Column("sale_id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("tier", sa.SmallInteger, nullable=False),
        sa.Column("row", sa.Integer, nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("booking_id", pg.UUID(as_uuid=True), nullable=False, index=True),
        sa.Column("fence", sa.BigInteger, nullable=False),
        sa.Column(
            "sold_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("returned_time", sa.DateTime(timezone=True)),
    )
    op.create_index(
        "one_live_sale_per_seat",
        "seat_sales",
        ["event_id", "tier", "row", "number"],
        unique=True,
        postgresql_where=sa.text("returned_time IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("seat_sales")
    op.drop_table("seats")
    op.drop_table("event_tiers")
    op.drop_table("events")
