"""event lifecycle: state (draft, published, cancelled), sale window, and a
version for etags

Revision ID: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    # Events made before there were states were on sale at once: PUBLISHED.
    op.add_column("events", sa.Column("state", sa.SmallInteger, nullable=False, server_default="2"))
    op.add_column("events", sa.Column("sale_start_time", sa.DateTime(timezone=True)))
    op.add_column("events", sa.Column("sale_end_time", sa.DateTime(timezone=True)))
    op.add_column("events", sa.Column("version", sa.BigInteger, nullable=False, server_default="1"))
    op.add_column("events", sa.Column("update_time", sa.DateTime(timezone=True)))
    op.execute("UPDATE events SET update_time = create_time")
    op.alter_column("events", "update_time", nullable=False)
    op.create_check_constraint("event_state_valid", "events", "state IN (1, 2, 3)")


def downgrade() -> None:
    op.drop_constraint("event_state_valid", "events")
    for column in ("update_time", "version", "sale_end_time", "sale_start_time", "state"):
        op.drop_column("events", column)
