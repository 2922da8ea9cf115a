"""notifications

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("notification_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("message_id", sa.Text, nullable=False, unique=True),
        sa.Column("message_type", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("user_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column(
            "next_attempt_time",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column("last_error", sa.Text, nullable=False, server_default=""),
        sa.Column(
            "create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("sent_time", sa.DateTime(timezone=True)),
    )
    op.create_index(
        "notifications_by_user", "notifications", ["user_id", "create_time", "notification_id"]
    )
    op.create_index(
        "notifications_due",
        "notifications",
        ["next_attempt_time"],
        postgresql_where=sa.text("state = 1"),
    )


def downgrade() -> None:
    op.drop_table("notifications")
