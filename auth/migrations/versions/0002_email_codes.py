"""email verification and one-time codes

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column("email_verified", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "account_codes",
        sa.Column(
            "user_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("users.user_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("purpose", sa.Text, primary_key=True),
        sa.Column("code_digest", sa.LargeBinary, nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts_left", sa.Integer, nullable=False),
        sa.CheckConstraint(
            "purpose IN ('verify_email', 'reset_password')", name="account_codes_purpose_valid"
        ),
    )


def downgrade() -> None:
    op.drop_table("account_codes")
    op.drop_column("users", "email_verified")
