"""sell_seats() finds each seat by its whole key

Revision ID: 0010

0007's sale found its seats with `(tier, row, number) IN (unnest ...)`. For an
event created since the table was last analyzed the planner expects one row
for its event_id, so it scanned every seat of the event on the key's prefix
and filtered the join, twice a sale (the lock and the update): 10,000 index
entries for a two-seat sale of a 5,000-seat event, and more as dead rows pile
up during a sale. Here each seat is looked up by its full primary key (a
lateral lookup per seat, planned the same whatever the statistics say) and
updated by the row ids the lock returned.
"""

from importlib import import_module

from alembic import op

revision = "0010"
down_revision = "0009"

# As 0007's: the event's row first, shared; the seats locked in seat-map
# order (DISTINCT also makes a seat named twice fail the count, as before).
SELL_SEATS = """
CREATE OR REPLACE FUNCTION sell_seats(
    p_event uuid, p_tiers smallint[], p_rows int[], p_numbers int[],
    p_booking uuid, p_fence bigint
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    sellable int;
    locked_rows tid[];
    counted record;
    event_state smallint;
BEGIN
    SELECT e.state INTO event_state FROM events e WHERE e.event_id = p_event FOR SHARE;
    IF event_state IS DISTINCT FROM 2 THEN
        RAISE EXCEPTION 'event % is not on sale', p_event USING ERRCODE = 'TK001';
    END IF;
    SELECT count(*) FILTER (WHERE seat.status = 'AVAILABLE' AND seat.fence < p_fence),
           array_agg(seat.ctid)
      INTO sellable, locked_rows
      FROM (SELECT DISTINCT * FROM unnest(p_tiers, p_rows, p_numbers) AS u(tier, row, number)
             ORDER BY 1, 2, 3) AS wanted
     CROSS JOIN LATERAL (
            SELECT s.ctid, s.status, s.fence FROM seats s
             WHERE s.event_id = p_event AND s.tier = wanted.tier
               AND s.row = wanted.row AND s.number = wanted.number
               FOR UPDATE) AS seat;
    IF sellable <> cardinality(p_tiers) THEN
        RETURN false;
    END IF;
    -- The rows are locked by this transaction, so their ids stay theirs.
    UPDATE seats s SET status = 'SOLD', booking_id = p_booking, fence = p_fence
     WHERE s.ctid = ANY(locked_rows) AND s.status = 'AVAILABLE' AND s.fence < p_fence;
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
    op.execute(SELL_SEATS)


def downgrade() -> None:
    op.execute(import_module("event.migrations.versions.0007_cancellation").SELL_SEATS)
