"""deleted accounts whose emails are erased

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "erased_users",
        sa.Column("user_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "erase_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )


def downgrade() -> None:
    op.drop_table("erased_users")
