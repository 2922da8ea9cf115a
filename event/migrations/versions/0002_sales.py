"""sales report and processed messages

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "sales",
        sa.Column("event_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("tier", sa.SmallInteger, primary_key=True),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("tickets_sold", sa.Integer, nullable=False, server_default="0"),
        sa.Column("tickets_refunded", sa.Integer, nullable=False, server_default="0"),
        sa.Column("gross_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("refunded_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column(
            "update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_table(
        "processed_messages",
        sa.Column("message_id", sa.Text, primary_key=True),
        sa.Column(
            "processed_time",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
    )


def downgrade() -> None:
    op.drop_table("processed_messages")
    op.drop_table("sales")
