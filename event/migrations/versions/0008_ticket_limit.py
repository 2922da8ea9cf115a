"""max_tickets_per_user per event

Revision ID: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.add_column(
        "events",
        sa.Column("max_tickets_per_user", sa.Integer, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_column("events", "max_tickets_per_user")
