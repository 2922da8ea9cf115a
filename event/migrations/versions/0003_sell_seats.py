"""sell_seats(): a sale as one statement

Revision ID: 0003
"""

from alembic import op

revision = "0003"
down_revision = "0002"

# The seats are locked in seat-map order, so two sales of overlapping seats
# queue instead of deadlocking, and checked before anything changes, so a
# sale is all or nothing without a transaction block around it. The counters
# move in tier order for the same reason. The conditional UPDATE and the
# unique index on live sales still guard every row on their own.
SELL_SEATS = """
CREATE FUNCTION sell_seats(
    p_event uuid, p_tiers smallint[], p_rows int[], p_numbers int[],
    p_booking uuid, p_fence bigint
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    sellable int;
    counted record;
BEGIN
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
    op.execute(SELL_SEATS)


def downgrade() -> None:
    op.execute("DROP FUNCTION sell_seats(uuid, smallint[], int[], int[], uuid, bigint)")
