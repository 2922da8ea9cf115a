"""a sold seat remembers its buyer

Revision ID: 0012

Redis counts a user's seats towards the event's max_tickets_per_user (a
sorted set per user, bought seats scored +inf). When Redis loses its data the
event service rebuilds the sold markers from PostgreSQL; without the buyer
in PostgreSQL it could not rebuild those counts, and a user could buy past
the limit after a Redis restart. sell_seats() gains the buyer (the user whose
hold it sells, NULL when the hold named none); the six-argument form stays,
selling to no known buyer, for replicas still running the code before this.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0012"
down_revision = "0011"

# 0010's sale, with the buyer written beside the booking.
SELL_SEATS_TO_BUYER = """
CREATE OR REPLACE FUNCTION sell_seats(
    p_event uuid, p_tiers smallint[], p_rows int[], p_numbers int[],
    p_booking uuid, p_fence bigint, p_buyer uuid
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
    UPDATE seats s SET status = 'SOLD', booking_id = p_booking, buyer_id = p_buyer, fence = p_fence
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
    op.add_column("seats", sa.Column("buyer_id", pg.UUID(as_uuid=True)))
    op.execute(SELL_SEATS_TO_BUYER)


def downgrade() -> None:
    op.execute("DROP FUNCTION sell_seats(uuid, smallint[], int[], int[], uuid, bigint, uuid)")
    op.drop_column("seats", "buyer_id")
