"""what a notification is about: its booking and event

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.add_column("notifications", sa.Column("booking_id", sa.Text))
    op.add_column("notifications", sa.Column("event_id", sa.Text))


def downgrade() -> None:
    op.drop_column("notifications", "event_id")
    op.drop_column("notifications", "booking_id")
