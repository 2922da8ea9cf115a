"""event refunds: the cancelled events whose bookings are refunded, and which
bookings go with their event

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.add_column("bookings", sa.Column("event_cancel_reason", sa.Text))
    op.create_index("bookings_by_event", "bookings", ["event_id", "state"])
    op.create_table(
        "event_cancellations",
        sa.Column("event_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("cancel_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "receive_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("reported_total", sa.Integer),
        sa.Column("reported_refunded", sa.Integer),
        sa.Column("finish_time", sa.DateTime(timezone=True)),
    )
    op.create_index(
        "event_cancellations_unfinished",
        "event_cancellations",
        ["receive_time"],
        postgresql_where=sa.text("finish_time IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("event_cancellations")
    op.drop_index("bookings_by_event", "bookings")
    op.drop_column("bookings", "event_cancel_reason")
