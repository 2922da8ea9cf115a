"""the outbox keeps the trace context of the transaction that wrote each row

Revision ID: 0003
"""

from alembic import op

from runtime.outbox import trace_context_column

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    # A constant default: PostgreSQL adds the column without rewriting the table.
    op.add_column("outbox", trace_context_column())


def downgrade() -> None:
    op.drop_column("outbox", "trace_context")
