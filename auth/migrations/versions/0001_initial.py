"""users, refresh tokens and the outbox

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
        "users",
        sa.Column("user_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("email", sa.Text, nullable=False, unique=True),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column(
            "create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("role IN ('user', 'organizer', 'admin')", name="users_role_valid"),
    )
    op.create_index("users_by_create_time", "users", ["create_time", "user_id"])
    op.create_table(
        "refresh_tokens",
        sa.Column("token_digest", sa.LargeBinary, primary_key=True),
        sa.Column("family_id", pg.UUID(as_uuid=True), nullable=False, index=True),
        sa.Column("user_id", pg.UUID(as_uuid=True), sa.ForeignKey("users.user_id"), nullable=False),
        sa.Column(
            "create_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_time", sa.DateTime(timezone=True)),
        sa.Column("revoked_time", sa.DateTime(timezone=True)),
    )
    # As the outbox was first made: a later migration adds its trace_context.
    outbox_table(sa.MetaData(), trace_context=False).create(op.get_bind())
    op.execute(CREATE_NOTIFY_TRIGGER)


def downgrade() -> None:
    op.execute(DROP_NOTIFY_TRIGGER)
    op.drop_table("outbox")
    op.drop_table("refresh_tokens")
    op.drop_table("users")
