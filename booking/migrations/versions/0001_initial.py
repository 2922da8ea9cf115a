"""bookings and the outbox

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from runtime.outbox import CREATE_NOTIFY_TRIGGER, DROP_NOTIFY_TRIGGER, outbox_table

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "bookings",
        sa.Column("booking_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("user_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("user_email", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("event_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("event_title", sa.Text, nullable=False),
        sa.Column("event_venue", sa.Text, nullable=False),
        sa.Column("event_starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seats", pg.JSONB, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("total_minor", sa.BigInteger, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("owner_token", sa.Text, nullable=False),
        sa.Column("fencing_token", sa.BigInteger, nullable=False),
        sa.Column("payment_id", pg.UUID(as_uuid=True)),
        sa.Column("failure_reason", sa.Text, nullable=False, server_default=""),
        sa.Column("cancel_requested_time", sa.DateTime(timezone=True)),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("user_id", "request_id", name="one_booking_per_request"),
    )
    op.create_index("bookings_by_user", "bookings", ["user_id", "create_time", "booking_id"])
    op.create_index("bookings_by_time", "bookings", ["create_time", "booking_id"])
    op.create_index(
        "bookings_unsettled",
        "bookings",
        ["update_time"],
        postgresql_where=sa.text("state = 1 OR cancel_requested_time IS NOT NULL"),
    )
    # As the outbox was first made: a later migration adds its trace_context.
    outbox_table(sa.MetaData(), trace_context=False).create(op.get_bind())
    op.execute(CREATE_NOTIFY_TRIGGER)


def downgrade() -> None:
    op.execute(DROP_NOTIFY_TRIGGER)
    op.drop_table("outbox")
    op.drop_table("bookings")
