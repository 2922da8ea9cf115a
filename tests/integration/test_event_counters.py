"""Invariants of the event service's use cases against real PostgreSQL and
Redis, in-process: counters always equal a recount, and the database alone
lets a seat be sold once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from event.domain import SeatRef, Tier, TierPlan, parse_seat_id
from event.holds import Hold, HoldStore, MarkersMissing, Refusal
from event.repository import SalePath, seat_sales
from event.service import EventUseCases
from runtime.errors import ServiceError
from runtime.identity import Caller, Role
from runtime.pg import Database
from scripts.mesh import Mesh


def parse(seat_id: str) -> SeatRef:
    seat = parse_seat_id(seat_id)
    assert seat is not None
    return seat


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
                return await harness.sale_path.sell(event_id, seat, uuid.uuid4(), fence, None)

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
                    event_id, [SeatRef(Tier.STANDARD, 1, 2)], uuid.uuid4(), 2, None
                )
            assert refused.value.reason == "EVENT_CANCELLED"
        finally:
            await harness.close()

    asyncio.run(scenario())


async def sold_event(harness: Harness, sales: dict[str, list[str]]) -> str:
    """An event of all three tiers with these seats sold: booking id -> seats."""
    plans = [*PLANS, TierPlan(Tier.VVIP, 9000, "USD", 1, 3)]
    view = await harness.events.create_event(
        ORGANIZER, "Rebuild", "", "Hall", datetime.now(UTC) + timedelta(days=1), plans
    )
    event_id = str(view.info.event_id)
    for booking, seats in sales.items():
        held = await harness.events.lock(event_id, seats, booking, 0)
        await harness.events.confirm(event_id, seats, booking, held.hold.fencing_token, booking)
    return event_id


def hold_keys(mesh: Mesh, event_id: str, seat_ids: list[str]) -> list[str | None]:
    with redis.Redis.from_url(mesh.env["REDIS_URL"], decode_responses=True) as store:
        return store.mget([f"ev:{{{event_id}}}:hold:{seat}" for seat in seat_ids])


def lose_redis_data(mesh: Mesh) -> None:
    with redis.Redis.from_url(mesh.env["REDIS_URL"]) as store:
        assert store.connection_pool.connection_kwargs["db"] == int(
            mesh.env["REDIS_URL"].rsplit("/", 1)[1]
        )
        store.flushdb()  # this test run's own Redis database


def test_a_rebuild_marks_every_sold_seat_of_every_tier_from_a_few_texts(mesh: Mesh) -> None:
    """After Redis loses its data, the sold seats come back as markers of the
    bookings that bought them, written a text of pairs at a time; the next
    hold on a sold seat is refused, on a free one granted above the new floor."""

    async def scenario() -> None:
        harness = await Harness(mesh).open()
        try:
            sales = {
                str(uuid.uuid4()): ["standard-1-1", "standard-2-3"],
                str(uuid.uuid4()): ["vip-1-2"],
                str(uuid.uuid4()): ["vvip-1-1", "vvip-1-3", "standard-1-2"],
            }
            event_id = await sold_event(harness, sales)
            key = uuid.UUID(event_id)
            lose_redis_data(mesh)
            texts = await harness.sale_path.sold_markers(key, per_text=2)
            assert len(texts) == 3  # six seats, two a text
            floor = await harness.sale_path.next_fence_floor(key)
            assert await harness.holds.restore(event_id, texts, floor) == 6
            seats = [s for sold in sales.values() for s in sold]
            assert hold_keys(mesh, event_id, seats) == [
                f"sold:{booking}" for booking, sold in sales.items() for _ in sold
            ]
            assert hold_keys(mesh, event_id, ["standard-1-3", "vip-1-1"]) == [None, None]
            for booking, sold in sales.items():
                refused = await harness.holds.lock(event_id, [parse(sold[0])], "late", 60_000)
                assert isinstance(refused, Refusal)
                assert refused.sold_markers == {sold[0]: f"sold:{booking}"}
            held = await harness.holds.lock(event_id, [parse("vip-1-1")], "fresh", 60_000)
            assert isinstance(held, Hold) and held.fencing_token > floor
            # The same through the service, which rebuilds by itself, once.
            lose_redis_data(mesh)
            with pytest.raises(ServiceError) as taken:
                await harness.events.lock(event_id, ["vvip-1-3", "vip-1-3"], "late", 0)
            assert taken.value.reason == "SEAT_UNAVAILABLE"
            assert taken.value.metadata["seat_ids"] == "vvip-1-3"
            assert hold_keys(mesh, event_id, seats) == [
                f"sold:{booking}" for booking, sold in sales.items() for _ in sold
            ]
            granted = await harness.events.lock(event_id, ["vip-1-3"], "fresh", 0)
            assert granted.hold.fencing_token > held.fencing_token
        finally:
            await harness.close()

    asyncio.run(scenario())


def test_a_rebuild_that_redis_loses_half_way_declares_nothing(mesh: Mesh) -> None:
    """Redis losing its data again between two texts of a rebuild takes the
    markers written so far with it: the rebuild must not declare the markers
    complete (a hold would then find a sold seat free), and the next hold
    rebuilds again."""

    async def scenario() -> None:
        harness = await Harness(mesh).open()
        try:
            booking = str(uuid.uuid4())
            event_id = await sold_event(
                harness, {booking: ["standard-1-1", "standard-1-2", "vip-1-1", "vvip-1-2"]}
            )
            key = uuid.UUID(event_id)
            lose_redis_data(mesh)
            first, *rest = await harness.sale_path.sold_markers(key, per_text=2)
            assert rest

            def interrupted() -> Iterator[str]:
                yield first
                lose_redis_data(mesh)  # the markers of `first` go with everything else
                yield from rest

            floor = await harness.sale_path.next_fence_floor(key)
            assert await harness.holds.restore(event_id, interrupted(), floor) is None
            with pytest.raises(MarkersMissing):
                await harness.holds.lock(event_id, [parse("standard-1-1")], "late", 60_000)
            with pytest.raises(ServiceError) as taken:
                await harness.events.lock(event_id, ["standard-1-1"], "late", 0)
            assert taken.value.reason == "SEAT_UNAVAILABLE"
            assert hold_keys(mesh, event_id, ["standard-1-1", "vvip-1-2"]) == [
                f"sold:{booking}",
                f"sold:{booking}",
            ]
        finally:
            await harness.close()

    asyncio.run(scenario())
