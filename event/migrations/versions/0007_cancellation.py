"""event cancellation: its reason and refund progress on the event, the
outbox that announces it, and sell_seats refusing a cancelled event

Revision ID: 0007
"""

import sqlalchemy as sa
from alembic import op

from runtime.outbox import CREATE_NOTIFY_TRIGGER, DROP_NOTIFY_TRIGGER, outbox_table

revision = "0007"
down_revision = "0006"

# As 0003's, but first the event's row, shared: a cancellation (which updates
# that row) waits for the sales in flight, and no sale commits after it.
SELL_SEATS = """
CREATE OR REPLACE FUNCTION sell_seats(
    p_event uuid, p_tiers smallint[], p_rows int[], p_numbers int[],
    p_booking uuid, p_fence bigint
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    sellable int;
    counted record;
    event_state smallint;
BEGIN
    SELECT e.state INTO event_state FROM events e WHERE e.event_id = p_event FOR SHARE;
    IF event_state IS DISTINCT FROM 2 THEN
        RAISE EXCEPTION 'event % is not on sale', p_event USING ERRCODE = 'TK001';
    END IF;
    SELECT count(*) FILTER (WHERE locked.status = 'AVAILABLE' AND locked.fence < p_fence)
      INTO sellable
      FROM (SELECT s.status, s.fence FROM seats s
             WHERE s.event_id = p_event
               AND (s.tier, s.row, s.number) IN (SELECT * FROM unnest(p_tiers, p_rows, p_numbers))
             ORDER BY s.tier, s.row, s.number
               FOR UPDATE) AS locked;
    IF sellable <> cardinality(p_tiers) THEN
        RETURN false;
    END IF;
    UPDATE seats s SET status = 'SOLD', booking_id = p_booking, fence = p_fence
     WHERE s.event_id = p_event
       AND (s.tier, s.row, s.number) IN (SELECT * FROM unnest(p_tiers, p_rows, p_numbers))
       AND s.status = 'AVAILABLE' AND s.fence < p_fence;
    INSERT INTO seat_sales (event_id, tier, row, number, booking_id, fence)
    SELECT p_event, t, r, n, p_booking, p_fence
      FROM unnest(p_tiers, p_rows, p_numbers) AS u(t, r, n);
    FOR counted IN SELECT t AS tier, count(*) AS n FROM unnest(p_tiers) AS t GROUP BY t ORDER BY t
    LOOP
        UPDATE event_tiers SET sold = sold + counted.n
         WHERE event_id = p_event AND tier = counted.tier;
    END LOOP;
    RETURN true;
END $$;
"""


def upgrade() -> None:
    op.add_column("events", sa.Column("cancel_reason", sa.Text))
    op.add_column("events", sa.Column("cancel_time", sa.DateTime(timezone=True)))
    op.add_column("events", sa.Column("cancel_bookings_total", sa.Integer))
    op.add_column("events", sa.Column("cancel_bookings_refunded", sa.Integer))
    op.add_column("events", sa.Column("cancel_finish_time", sa.DateTime(timezone=True)))
    # As the outbox was first made: a later migration adds its trace_context.
    outbox_table(sa.MetaData(), trace_context=False).create(op.get_bind())
    op.execute(CREATE_NOTIFY_TRIGGER)
    op.execute(SELL_SEATS)


def downgrade() -> None:
    from importlib import import_module

    op.execute(
        import_module("event.migrations.versions.0003_sell_seats").SELL_SEATS.replace(
            "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"
        )
    )
    op.execute(DROP_NOTIFY_TRIGGER)
    op.drop_table("outbox")
    for column in (
        "cancel_finish_time",
        "cancel_bookings_refunded",
        "cancel_bookings_total",
        "cancel_time",
        "cancel_reason",
    ):
        op.drop_column("events", column)
