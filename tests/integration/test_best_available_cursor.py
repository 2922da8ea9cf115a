"""The best-available cursor (event.holds: `ev:{event}:held:<tier>:cursor`)
against real Redis: it moves past taken seats only, lapses no later than the
holds it passed, and every way a seat comes free deletes it, so best-available
never overlooks a free seat for long."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator

import pytest
import redis

from event.domain import SeatRef, Tier
from event.holds import Hold, HoldStore, OverLimit
from scripts.mesh import Mesh

ROW = [SeatRef(Tier.STANDARD, 1, n) for n in range(1, 9)]
TTL_MS = 60_000


@pytest.fixture
def event_id(mesh: Mesh) -> Iterator[str]:
    """An event whose Redis state is complete (fence counter and markers flag set)."""
    event_id = str(uuid.uuid4())
    client = redis.Redis.from_url(mesh.env["REDIS_URL"])
    client.set(f"ev:{{{event_id}}}:fence", 1)
    client.set(f"ev:{{{event_id}}}:markers", "1")
    yield event_id
    for key in client.scan_iter(f"ev:{{{event_id}}}:*"):
        client.delete(key)
    client.close()


def with_store(mesh: Mesh, work: Callable[[HoldStore], Awaitable[None]]) -> None:
    async def run() -> None:
        store = HoldStore.connect(mesh.env["REDIS_URL"])
        try:
            await work(store)
        finally:
            await store.aclose()

    asyncio.run(run())


async def best(
    store: HoldStore,
    event_id: str,
    after: str,
    candidates: list[SeatRef],
    owner: str,
    quantity: int = 2,
    ttl_ms: int = TTL_MS,
) -> tuple[Hold, list[str]] | int:
    outcome = await store.lock_best(
        event_id, Tier.STANDARD, after, candidates, quantity, True, owner, ttl_ms, "", 0
    )
    assert not isinstance(outcome, OverLimit)
    return outcome


async def hold(store: HoldStore, event_id: str, seats: list[SeatRef], owner: str, ttl: int) -> None:
    assert isinstance(await store.lock(event_id, seats, owner, ttl), Hold)


def test_the_cursor_moves_past_taken_seats_and_no_further(mesh: Mesh, event_id: str) -> None:
    async def work(store: HoldStore) -> None:
        assert await store.cursor(event_id, Tier.STANDARD) == ""
        await hold(store, event_id, ROW[:2], "front", TTL_MS)
        taken = await best(store, event_id, "", ROW, "buyer")
        assert not isinstance(taken, int)
        assert taken[1] == ["standard-1-3", "standard-1-4"]
        # The front pair and the pair just taken are passed; seat 5 is free.
        assert await store.cursor(event_id, Tier.STANDARD) == "standard-1-4"
        # Candidates that do not begin at the cursor leave it alone.
        await hold(store, event_id, ROW[4:6], "middle", TTL_MS)
        assert await best(store, event_id, "standard-1-2", ROW[2:6], "late") == 4
        assert await store.cursor(event_id, Tier.STANDARD) == "standard-1-4"
        # From the cursor: seats 5 and 6 are taken, 7 and 8 free.
        taken = await best(store, event_id, "standard-1-4", ROW[4:], "next")
        assert not isinstance(taken, int)
        assert taken[1] == ["standard-1-7", "standard-1-8"]
        assert await store.cursor(event_id, Tier.STANDARD) == "standard-1-8"

    with_store(mesh, work)


def test_the_cursor_lapses_with_the_earliest_hold_it_passed(mesh: Mesh, event_id: str) -> None:
    async def work(store: HoldStore) -> None:
        await hold(store, event_id, ROW[:1], "brief", 400)
        await hold(store, event_id, ROW[1:2], "long", TTL_MS)
        assert await best(store, event_id, "", ROW[:2], "buyer") == 2
        assert await store.cursor(event_id, Tier.STANDARD) == "standard-1-2"
        await asyncio.sleep(0.5)  # the brief hold lapses, and the cursor with it
        assert await store.cursor(event_id, Tier.STANDARD) == ""
        taken = await best(store, event_id, "", ROW, "buyer", quantity=1)
        assert not isinstance(taken, int)
        assert taken[1] == ["standard-1-1"]

    with_store(mesh, work)


@pytest.mark.parametrize("freed_by", ["release", "drop", "unmark_sold"])
def test_a_seat_coming_free_deletes_the_cursor(mesh: Mesh, event_id: str, freed_by: str) -> None:
    booking_id = str(uuid.uuid4())
    hold_id = str(uuid.uuid4())
    user = str(uuid.uuid4())
    owner = f"hold:{hold_id}"

    async def work(store: HoldStore) -> None:
        assert isinstance(await store.lock(event_id, ROW[:2], owner, TTL_MS, user), Hold)
        if freed_by == "unmark_sold":
            await store.mark_sold(event_id, ROW[:2], booking_id, owner)
        elif freed_by == "drop":
            fields = {"user": user, "owner": owner, "expire_ms": 2**42, "booking": ""}
            assert await store.create_record(event_id, hold_id, fields | {"state": "live"}, TTL_MS)
        assert await best(store, event_id, "", ROW[:4], "buyer", quantity=3) == 2
        assert await store.cursor(event_id, Tier.STANDARD) == "standard-1-2"
        if freed_by == "release":
            assert await store.release(event_id, ROW[:2], owner) == ["standard-1-1", "standard-1-2"]
        elif freed_by == "drop":
            assert await store.drop(event_id, hold_id, ROW[:2], user) == ""
        else:
            await store.unmark_sold(event_id, ROW[:2], booking_id)
        assert await store.cursor(event_id, Tier.STANDARD) == ""
        taken = await best(store, event_id, "", ROW, "buyer")
        assert not isinstance(taken, int)
        assert taken[1] == ["standard-1-1", "standard-1-2"]

    with_store(mesh, work)


def test_a_sold_seat_keeps_the_cursor_past_it(mesh: Mesh, event_id: str) -> None:
    async def work(store: HoldStore) -> None:
        await store.mark_sold(event_id, ROW[:3], str(uuid.uuid4()))
        assert await best(store, event_id, "", ROW[:3], "buyer") == 3
        assert await store.cursor(event_id, Tier.STANDARD) == "standard-1-3"

    with_store(mesh, work)
    # Sold markers never lapse: the cursor keeps the longest life it may have.
    client = redis.Redis.from_url(mesh.env["REDIS_URL"])
    assert 0.9 * TTL_MS < client.pttl(f"ev:{{{event_id}}}:held:standard:cursor") <= TTL_MS
    client.close()
