"""check-ins: one row per ticket admitted at the door

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "check_ins",
        sa.Column("booking_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("seat_id", sa.Text, nullable=False),
        sa.Column("event_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("checked_in_by", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("check_in_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("booking_id", "seat_id", name="one_check_in_per_ticket"),
    )
    op.create_index("check_ins_by_event", "check_ins", ["event_id"])


def downgrade() -> None:
    op.drop_table("check_ins")
