"""fence epochs: fencing tokens that never go backwards, even when Redis
loses its data

Revision ID: 0004
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "event_fences",
        sa.Column(
            "event_id", pg.UUID(as_uuid=True), sa.ForeignKey("events.event_id"), primary_key=True
        ),
        sa.Column("epoch", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("event_fences")
