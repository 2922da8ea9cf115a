"""event search: indexes for ListEvents' filters (organizer, state, title or
venue text)

Revision ID: 0006
"""

from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    # pg_trgm is a trusted extension (PostgreSQL 13+): the database's owner may
    # create it. Its GIN indexes serve ILIKE '%text%' on each column.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_index("events_by_organizer", "events", ["organizer_id", "starts_at", "event_id"])
    op.create_index("events_by_state", "events", ["state", "starts_at", "event_id"])
    op.create_index(
        "events_title_trigrams",
        "events",
        ["title"],
        postgresql_using="gin",
        postgresql_ops={"title": "gin_trgm_ops"},
    )
    op.create_index(
        "events_venue_trigrams",
        "events",
        ["venue"],
        postgresql_using="gin",
        postgresql_ops={"venue": "gin_trgm_ops"},
    )


def downgrade() -> None:
    for index in (
        "events_venue_trigrams",
        "events_title_trigrams",
        "events_by_state",
        "events_by_organizer",
    ):
        op.drop_index(index, "events")
