"""Invariants of the event service's use cases against real PostgreSQL and
Redis, in-process: counters always equal a recount, and the database alone
lets a seat be sold once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from event.domain import SeatRef, Tier, TierPlan
from event.holds import HoldStore
from event.repository import SalePath, seat_sales
from event.service import EventUseCases
from runtime.errors import ServiceError
from runtime.identity import Caller, Role
from runtime.pg import Database
from scripts.mesh import Mesh

SEATS = [f"standard-{r}-{n}" for r in (1, 2) for n in (1, 2, 3)] + ["vip-1-1", "vip-1-2", "vip-1-3"]
PLANS = [TierPlan(Tier.STANDARD, 1000, "USD", 2, 3), TierPlan(Tier.VIP, 3000, "USD", 1, 3)]
ORGANIZER = Caller(str(uuid.uuid4()), Role.ORGANIZER, "org@example.com")

operation = st.tuples(
    st.sampled_from(["lock", "confirm", "release", "return"]),
    st.integers(0, 3),
    st.lists(st.sampled_from(SEATS), min_size=1, max_size=4, unique=True),
)


class Harness:
    def __init__(self, mesh: Mesh) -> None:
        self.engine = create_async_engine(mesh.env["EVENT_DATABASE_URL"], pool_size=5)
        self.database = Database(mesh.env["EVENT_DATABASE_URL"], 5)
        self.sale_path = SalePath(self.database)
        self.holds = HoldStore.connect(mesh.env["REDIS_URL"])
        self.events = EventUseCases(
            self.engine, self.sale_path, self.holds, 60, availability_cache_seconds=0
        )

    async def open(self) -> Harness:
        await self.database.open()
        return self

    async def close(self) -> None:
        await self.database.close()
        await self.holds.aclose()
        await self.engine.dispose()


async def run_scenario(mesh: Mesh, operations: list[tuple[str, int, list[str]]]) -> None:
    harness = await Harness(mesh).open()
    try:
        view = await harness.events.create_event(
            ORGANIZER, "Prop", "", "Hall", datetime.now(UTC) + timedelta(days=1), PLANS
        )
        event_id = str(view.info.event_id)
        owners = [str(uuid.uuid4()) for _ in range(4)]
        holds: dict[str, tuple[list[str], int]] = {}
        # What must be sold after the operations that succeeded: seat -> buyer.
        expected: dict[str, str] = {}
        for kind, who, seats in operations:
            owner = owners[who]
            try:
                if kind == "lock":
                    held = await harness.events.lock(event_id, seats, owner, 0)
                    holds[owner] = (seats, held.hold.fencing_token)
                elif kind == "confirm" and owner in holds:
                    wanted, fence = holds[owner]
                    await harness.events.confirm(event_id, wanted, owner, fence, owner)
                    expected |= dict.fromkeys(wanted, owner)
                elif kind == "release":
                    await harness.events.release(event_id, seats, owner)
                elif kind == "return":
                    await harness.events.return_seats(event_id, owner)
                    expected = {s: b for s, b in expected.items() if b != owner}
            except ServiceError:
                pass  # refusals are expected; the invariants below must hold regardless
        # Whatever happened, once the holds are let go an unsold seat sells:
        # every example proves a sale, not only that nothing broke.
        for owner in owners:
            await harness.events.release(event_id, SEATS, owner)
        free = [s for s in SEATS if s not in expected]
        if free:
            last = str(uuid.uuid4())
            held = await harness.events.lock(event_id, free[:1], last, 0)
            await harness.events.confirm(event_id, free[:1], last, held.hold.fencing_token, last)
            expected[free[0]] = last
        assert expected, "no example may end without a sale"
        await check_invariants(harness, event_id, expected)
    finally:
        await harness.close()


async def check_invariants(harness: Harness, event_id: str, expected: dict[str, str]) -> None:
    view = await harness.events.get_event(None, event_id)
    async with harness.engine.connect() as conn:
        recount = dict(
            (
                await conn.execute(
                    sa.text(
                        "SELECT tier, count(*) FILTER (WHERE status = 'SOLD') FROM seats "
                        "WHERE event_id = :e GROUP BY tier"
                    ),
                    {"e": event_id},
                )
            ).all()
        )
        ledger = dict(
            (
                await conn.execute(
                    sa.text(
                        "SELECT tier, count(*) FROM seat_sales WHERE event_id = :e "
                        "AND returned_time IS NULL GROUP BY tier"
                    ),
                    {"e": event_id},
                )
            ).all()
        )
        sold_seats = {
            SeatRef(Tier(t), r, n)
            for t, r, n in await conn.execute(
                sa.text(
                    "SELECT tier, row, number FROM seats WHERE event_id = :e AND status = 'SOLD'"
                ),
                {"e": event_id},
            )
        }
    all_seats = [
        SeatRef(p.tier, r, n)
        for p in PLANS
        for r in range(1, p.rows + 1)
        for n in range(1, p.seats_per_row + 1)
    ]
    held = await harness.holds.held_among(event_id, all_seats)
    assert not held & sold_seats, "a seat is both sold and held"
    assert {s.seat_id for s in sold_seats} == set(expected), "sold is not what was confirmed"
    for tier in view.tiers:
        key = tier.plan.tier.value
        assert tier.sold == recount.get(key, 0) == ledger.get(key, 0)
        assert tier.held == sum(1 for s in held if s.tier is tier.plan.tier)
        assert tier.available + tier.held + tier.sold == tier.plan.capacity


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=st.lists(operation, min_size=1, max_size=25))
def test_counters_equal_a_recount(mesh: Mesh, operations: list) -> None:
    asyncio.run(run_scenario(mesh, operations))


def test_racing_sales_of_one_seat_have_exactly_one_winner(mesh: Mesh) -> None:
    async def race() -> None:
        harness = await Harness(mesh).open()
        try:
            view = await harness.events.create_event(
                ORGANIZER, "Race", "", "Hall", datetime.now(UTC) + timedelta(days=1), PLANS
            )
            event_id = view.info.event_id
            seat = [SeatRef(Tier.VIP, 1, 1)]

            async def sell(fence: int) -> bool:
                return await harness.sale_path.sell(event_id, seat, uuid.uuid4(), fence)

            outcomes = await asyncio.gather(*(sell(f) for f in range(1, 9)))
            assert outcomes.count(True) == 1
            # And the ledger's unique index refuses a second live sale outright.
            with pytest.raises(IntegrityError):
                async with harness.engine.begin() as conn:
                    await conn.execute(
                        seat_sales.insert().values(
                            event_id=event_id,
                            tier=Tier.VIP.value,
                            row=1,
                            number=1,
                            booking_id=uuid.uuid4(),
                            fence=99,
                        )
                    )
        finally:
            await harness.close()

    asyncio.run(race())


def test_a_cancellation_waits_for_the_sales_in_flight_and_refuses_later_ones(mesh: Mesh) -> None:
    async def scenario() -> None:
        harness = await Harness(mesh).open()
        try:
            view = await harness.events.create_event(
                ORGANIZER, "Last night", "", "Hall", datetime.now(UTC) + timedelta(days=1), PLANS
            )
            event_id = view.info.event_id
            async with harness.engine.connect() as in_flight:
                await in_flight.begin()
                sold = await in_flight.scalar(
                    sa.text(
                        "SELECT sell_seats(:event, ARRAY[:tier]::smallint[], ARRAY[1], "
                        "ARRAY[1], :booking, :fence)"
                    ),
                    {
                        "event": event_id,
                        "tier": Tier.STANDARD.value,
                        "booking": uuid.uuid4(),
                        "fence": 1,
                    },
                )
                assert sold is True
                cancelling = asyncio.create_task(
                    harness.events.cancel_event(ORGANIZER, str(event_id), "storm", "")
                )
                # The cancellation queues behind the uncommitted sale's lock ...
                async with harness.engine.connect() as watcher:
                    deadline = asyncio.get_running_loop().time() + 10
                    while not await watcher.scalar(
                        sa.text("SELECT count(*) FROM pg_locks WHERE NOT granted")
                    ):
                        assert asyncio.get_running_loop().time() < deadline, "never waited"
                        await asyncio.sleep(0.02)
                assert not cancelling.done()
                await in_flight.commit()
            # ... and ends once the sale committed, which the refunds then cover.
            cancelled = await cancelling
            assert cancelled.info.cancellation is not None
            with pytest.raises(ServiceError) as refused:
                await harness.sale_path.sell(
                    event_id, [SeatRef(Tier.STANDARD, 1, 2)], uuid.uuid4(), 2
                )
            assert refused.value.reason == "EVENT_CANCELLED"
        finally:
            await harness.close()

    asyncio.run(scenario())
