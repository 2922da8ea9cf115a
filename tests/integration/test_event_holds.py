"""LockSeat, ReleaseSeat, ConfirmSeats and ReturnSeats over gRPC, against
real PostgreSQL and Redis."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import redis

from runtime.status import error_details
from scripts.mesh import Mesh
from tests.support import create_event_grpc, fails, wait_for
from ticketing.event.v1 import event_pb2, event_pb2_grpc


@pytest.fixture(scope="module")
def events(event_channel_as_booking: grpc.Channel) -> event_pb2_grpc.EventServiceStub:
    """The hold and sale RPCs, called as booking (their only allowed caller)."""
    return event_pb2_grpc.EventServiceStub(event_channel_as_booking)


@pytest.fixture(scope="module")
def public(event_channel: grpc.Channel) -> event_pb2_grpc.EventServiceStub:
    """The public RPCs (CreateEvent, GetEvent), called as a developer."""
    return event_pb2_grpc.EventServiceStub(event_channel)


@pytest.fixture(scope="module")
def store(mesh: Mesh) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(mesh.env["REDIS_URL"], decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def event(public: event_pb2_grpc.EventServiceStub, organizer: str) -> event_pb2.Event:
    return create_event_grpc(public, organizer)


def lock(
    events: event_pb2_grpc.EventServiceStub,
    event: event_pb2.Event,
    seats: list[str],
    owner: str,
    ttl: int = 0,
) -> event_pb2.LockSeatResponse:
    return events.LockSeat(
        event_pb2.LockSeatRequest(
            event_id=event.event_id, seat_ids=seats, owner=owner, ttl_seconds=ttl
        )
    )


def confirm(
    events: event_pb2_grpc.EventServiceStub,
    event: event_pb2.Event,
    seats: list[str],
    held: event_pb2.LockSeatResponse,
    booking_id: str,
) -> event_pb2.ConfirmSeatsResponse:
    return events.ConfirmSeats(
        event_pb2.ConfirmSeatsRequest(
            event_id=event.event_id,
            seat_ids=seats,
            owner_token=held.owner_token,
            fencing_token=held.fencing_token,
            booking_id=booking_id,
        )
    )


def holder(store: redis.Redis, event: event_pb2.Event, seat: str) -> str | None:
    return store.get(f"ev:{{{event.event_id}}}:hold:{seat}")


def tier_counts(public: event_pb2_grpc.EventServiceStub, event: event_pb2.Event) -> dict:
    got = public.GetEvent(event_pb2.GetEventRequest(event_id=event.event_id))
    return {event_pb2.Tier.Name(t.tier): (t.available, t.held, t.sold) for t in got.tiers}


def test_lock_prices_each_seat_by_its_tier_and_counts_it_held(events, public, event) -> None:
    held = lock(events, event, ["VIP-1-1", "normal-2-3"], "booking-a")
    assert [s.seat_id for s in held.seats] == ["vip-1-1", "standard-2-3"]
    assert [s.price.amount_minor for s in held.seats] == [15000, 5000]
    assert held.owner_token == "booking-a" and held.fencing_token > 0
    assert held.event.title == event.title
    assert tier_counts(public, event) == {"TIER_STANDARD": (39, 1, 0), "TIER_VIP": (9, 1, 0)}
    again = lock(events, event, ["vip-1-1"], "booking-a")  # the same owner: idempotent
    assert again.fencing_token > held.fencing_token


def test_fifty_racing_lockers_never_share_a_seat(events, public, event, store) -> None:
    pool = [f"standard-1-{n}" for n in range(1, 11)] + [f"vip-1-{n}" for n in range(1, 6)]
    rng = random.Random(7)
    wants = {f"owner-{i}": rng.sample(pool, rng.randint(1, 4)) for i in range(50)}

    def attempt(owner: str) -> tuple[str, bool]:
        try:
            lock(events, event, wants[owner], owner)
            return owner, True
        except grpc.RpcError as error:
            details = error_details(error)
            assert (details.code, details.reason) == (grpc.StatusCode.ABORTED, "SEAT_UNAVAILABLE")
            return owner, False

    with ThreadPoolExecutor(50) as pool_:
        outcomes = dict(pool_.map(attempt, wants))
    winners = [o for o, won in outcomes.items() if won]
    assert winners, "someone must get seats"
    taken = [seat for o in winners for seat in wants[o]]
    assert len(taken) == len(set(taken)), "a seat went to two owners"
    for owner, won in outcomes.items():
        holders = {holder(store, event, seat) for seat in wants[owner]}
        if won:
            assert holders == {owner}
        else:
            assert owner not in holders, f"{owner} lost yet holds part of its seats"
    counts = tier_counts(public, event)
    assert counts["TIER_STANDARD"][1] + counts["TIER_VIP"][1] == len(taken)


def test_expired_hold_frees_the_seat_and_cannot_be_confirmed(events, public, event, store) -> None:
    held = lock(events, event, ["vip-2-1"], "slow-owner", ttl=1)
    wait_for(lambda: holder(store, event, "vip-2-1") is None, "the hold to expire", timeout=5)
    assert tier_counts(public, event)["TIER_VIP"] == (10, 0, 0)
    late = error_details(fails(confirm, events, event, ["vip-2-1"], held, str(uuid.uuid4())))
    assert (late.code, late.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_EXPIRED")
    assert lock(events, event, ["vip-2-1"], "next-owner").owner_token == "next-owner"


def test_only_the_owner_releases(events, public, event, store) -> None:
    lock(events, event, ["standard-3-1", "standard-3-2"], "owner-a")
    foreign = events.ReleaseSeat(
        event_pb2.ReleaseSeatRequest(
            event_id=event.event_id, seat_ids=["standard-3-1"], owner_token="owner-b"
        )
    )
    assert list(foreign.released_seat_ids) == []
    assert holder(store, event, "standard-3-1") == "owner-a"
    own = events.ReleaseSeat(
        event_pb2.ReleaseSeatRequest(
            event_id=event.event_id,
            seat_ids=["standard-3-1", "standard-3-2"],
            owner_token="owner-a",
        )
    )
    assert list(own.released_seat_ids) == ["standard-3-1", "standard-3-2"]
    assert tier_counts(public, event)["TIER_STANDARD"] == (40, 0, 0)


def test_confirm_sells_and_return_puts_back(events, public, event, store) -> None:
    seats = ["vip-1-2", "standard-4-10"]
    booking = str(uuid.uuid4())
    held = lock(events, event, seats, booking)
    sold = confirm(events, event, seats, held, booking)
    assert {s.status for s in sold.seats} == {event_pb2.SEAT_STATUS_SOLD}
    assert tier_counts(public, event) == {"TIER_STANDARD": (39, 0, 1), "TIER_VIP": (9, 0, 1)}
    # A retry of the same confirmation is a no-op success.
    assert len(confirm(events, event, seats, held, booking).seats) == 2
    assert tier_counts(public, event)["TIER_VIP"] == (9, 0, 1)
    taken = error_details(fails(lock, events, event, ["vip-1-2"], "someone-else"))
    assert taken.reason == "SEAT_UNAVAILABLE" and taken.metadata["seat_ids"] == "vip-1-2"

    returned = events.ReturnSeats(
        event_pb2.ReturnSeatsRequest(event_id=event.event_id, booking_id=booking)
    )
    assert sorted(returned.returned_seat_ids) == sorted(seats)
    assert tier_counts(public, event) == {"TIER_STANDARD": (40, 0, 0), "TIER_VIP": (10, 0, 0)}
    assert holder(store, event, "vip-1-2") is None
    assert lock(events, event, ["vip-1-2"], "someone-else").owner_token == "someone-else"


def test_database_refuses_a_second_sale_even_if_redis_lies(events, public, event, store) -> None:
    first = str(uuid.uuid4())
    held = lock(events, event, ["vip-2-5"], first)
    confirm(events, event, ["vip-2-5"], held, first)
    # Redis forgets the sale (say, it restarted) and hands out a hold on the sold seat.
    store.set(f"ev:{{{event.event_id}}}:hold:vip-2-5", "liar", px=60_000)
    liar = event_pb2.LockSeatResponse(owner_token="liar", fencing_token=held.fencing_token + 100)
    refused = error_details(fails(confirm, events, event, ["vip-2-5"], liar, str(uuid.uuid4())))
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "SEAT_UNAVAILABLE",
    )
    assert tier_counts(public, event)["TIER_VIP"][2] == 1


def test_holds_rebuild_sold_markers_after_redis_lost_them(events, event, store) -> None:
    buyer = str(uuid.uuid4())
    confirm(events, event, ["vip-2-3"], lock(events, event, ["vip-2-3"], buyer), buyer)
    marker = f"ev:{{{event.event_id}}}:hold:vip-2-3"
    assert store.get(marker) == f"sold:{buyer}"
    # Redis loses the event's keys (a restart without persistence): the marker and
    # the flag that says the markers are complete go together.
    store.delete(marker, f"ev:{{{event.event_id}}}:markers")
    refused = error_details(fails(lock, events, event, ["vip-2-3"], "next-buyer"))
    assert (refused.code, refused.reason) == (grpc.StatusCode.ABORTED, "SEAT_UNAVAILABLE")
    assert store.get(marker) == f"sold:{buyer}"  # rebuilt from PostgreSQL
    assert store.get(f"ev:{{{event.event_id}}}:markers") is not None


def test_a_retried_sale_whose_marker_redis_lost_marks_it_again(events, event, store) -> None:
    """Event died between the commit and the marker (or Redis lost just that key):
    booking's retry of the sale writes the marker, so no later hold finds the seat
    free in Redis, to be sold and refunded."""
    buyer = str(uuid.uuid4())
    held = lock(events, event, ["vip-2-4"], buyer)
    confirm(events, event, ["vip-2-4"], held, buyer)
    marker = f"ev:{{{event.event_id}}}:hold:vip-2-4"
    store.delete(marker)  # the markers flag stays: Redis vouches for the rest
    assert len(confirm(events, event, ["vip-2-4"], held, buyer).seats) == 1
    assert store.get(marker) == f"sold:{buyer}"
    refused = error_details(fails(lock, events, event, ["vip-2-4"], "next-buyer"))
    assert refused.reason == "SEAT_UNAVAILABLE"


def test_a_marker_postgresql_disowns_does_not_block_a_hold(events, event, store) -> None:
    lock(events, event, ["vip-2-4"], "warm-up")  # the markers of this event are complete
    stale = f"ev:{{{event.event_id}}}:hold:vip-1-5"
    store.set(stale, f"sold:{uuid.uuid4()}")  # a sale since returned, say
    held = lock(events, event, ["vip-1-5"], "buyer")
    assert held.fencing_token > 0
    assert store.get(stale) == "buyer"


@pytest.mark.parametrize(
    ("seats", "field"),
    [
        (["vip-9-1"], "seat_ids[0]"),
        (["standard-1-1", "bogus"], "seat_ids[1]"),
        (["vip-1-1", "VIP-1-1"], "seat_ids[1]"),
        ([], "seat_ids"),
    ],
)
def test_bad_seat_ids_name_the_field(events, event, seats, field) -> None:
    error = error_details(fails(lock, events, event, seats, "owner"))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert field in {v.field for v in error.violations}


def test_unknown_and_malformed_events(events) -> None:
    missing = fails(lock, events, event_pb2.Event(event_id=str(uuid.uuid4())), ["vip-1-1"], "o")
    assert missing.code() is grpc.StatusCode.NOT_FOUND
    malformed = error_details(
        fails(lock, events, event_pb2.Event(event_id="nope"), ["vip-1-1"], "o")
    )
    assert malformed.code is grpc.StatusCode.INVALID_ARGUMENT
    assert malformed.violations[0].field == "event_id"


def expire_ms(held: event_pb2.LockSeatResponse) -> int:
    return held.expire_time.seconds * 1000 + held.expire_time.nanos // 1_000_000


def test_a_caller_cannot_hold_longer_than_the_server_allows(events, event, store) -> None:
    # The test mesh runs with the default HOLD_TTL_SECONDS, 300.
    before = time.time() * 1000
    held = lock(events, event, ["standard-4-1"], "greedy-owner", ttl=86_400)
    assert before + 295_000 <= expire_ms(held) <= time.time() * 1000 + 300_000
    assert store.pttl(f"ev:{{{event.event_id}}}:hold:standard-4-1") <= 300_000
    negative = error_details(fails(lock, events, event, ["standard-4-2"], "owner", ttl=-1))
    assert negative.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in negative.violations] == ["ttl_seconds"]


def test_locking_again_does_not_extend_a_hold(events, event, store) -> None:
    first = lock(events, event, ["standard-4-3"], "renewing-owner", ttl=2)
    key = f"ev:{{{event.event_id}}}:hold:standard-4-3"
    # Half a second into the hold, so an extension would show.
    wait_for(lambda: store.pttl(key) <= 1_500, "half a second of the hold to pass", every=0.02)
    # Asking again, for longer and with one more seat: the seat held before keeps
    # its first expiry, and so does the hold as a whole (its earliest seat's).
    again = lock(events, event, ["standard-4-3", "standard-4-4"], "renewing-owner", ttl=300)
    assert abs(expire_ms(again) - expire_ms(first)) < 50
    assert store.pttl(key) <= 1_500
    wait_for(
        lambda: holder(store, event, "standard-4-3") is None,
        "the first hold's expiry; the re-lock must not have kept the seat",
        timeout=3,
    )
    assert lock(events, event, ["standard-4-3"], "next-owner").owner_token == "next-owner"


def sell_and_return(events, event, seat: str) -> event_pb2.LockSeatResponse:
    """A sale of `seat` and its return: the seat is free again, its fence raised."""
    booking = str(uuid.uuid4())
    held = lock(events, event, [seat], booking)
    confirm(events, event, [seat], held, booking)
    events.ReturnSeats(event_pb2.ReturnSeatsRequest(event_id=event.event_id, booking_id=booking))
    return held


def test_postgresql_refuses_a_sale_with_a_stale_token(events, public, event, store) -> None:
    earlier = sell_and_return(events, event, "vip-2-2")
    # Redis says a holder holds the free seat, with a token no larger than the
    # one that last sold it: PostgreSQL has the last word.
    store.set(f"ev:{{{event.event_id}}}:hold:vip-2-2", "stale", px=60_000)
    stale = event_pb2.LockSeatResponse(owner_token="stale", fencing_token=earlier.fencing_token)
    refused = error_details(fails(confirm, events, event, ["vip-2-2"], stale, str(uuid.uuid4())))
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "SEAT_UNAVAILABLE",
    )
    assert tier_counts(public, event)["TIER_VIP"][2] == 0
    store.delete(f"ev:{{{event.event_id}}}:hold:vip-2-2")
    buyer = str(uuid.uuid4())
    fresh = lock(events, event, ["vip-2-2"], buyer)
    assert fresh.fencing_token > earlier.fencing_token
    assert confirm(events, event, ["vip-2-2"], fresh, buyer).seats[0].status == (
        event_pb2.SEAT_STATUS_SOLD
    )


def test_tokens_keep_rising_when_redis_loses_its_data(mesh, events, public, event, store) -> None:
    """The seat's fence in PostgreSQL outlives Redis: after a flush, holds must
    get tokens above it, or a returned seat could never be sold again (each try
    charged, then refunded)."""
    earlier = sell_and_return(events, event, "vip-1-4")
    assert store.connection_pool.connection_kwargs["db"] == int(
        mesh.env["REDIS_URL"].rsplit("/", 1)[1]
    )
    store.flushdb()  # this test run's own Redis database: everything is forgotten
    buyer = str(uuid.uuid4())
    after = lock(events, event, ["vip-1-4"], buyer)
    assert after.fencing_token > earlier.fencing_token
    sold = confirm(events, event, ["vip-1-4"], after, buyer)
    assert sold.seats[0].status == event_pb2.SEAT_STATUS_SOLD
    assert tier_counts(public, event)["TIER_VIP"][2] == 1
    # And again, on a second loss: the epoch moves on each time.
    events.ReturnSeats(event_pb2.ReturnSeatsRequest(event_id=event.event_id, booking_id=buyer))
    store.flushdb()
    third = lock(events, event, ["vip-1-4"], str(uuid.uuid4()))
    assert third.fencing_token > after.fencing_token
