"""Checkout in two steps through Envoy: holds as a resource (named seats or the
best available), renewed and released by their owner only, bought by
CreateBooking with hold_id; and the per-user ticket limit under concurrency."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
import redis

from scripts.mesh import Mesh
from tests.audit import audit_event
from tests.e2e.test_auth_http import assert_error
from tests.support import (
    Edge,
    Reply,
    book,
    card,
    event_body,
    register_and_login,
    wait_for,
)


def new_event(edge: Edge, organizer: str, **extra: object) -> dict:
    body = event_body(title="Two-step night") | extra
    reply = edge.post("/v1/events", body, token=organizer)
    assert reply.status == 200, reply.body
    return reply.body


@pytest.fixture
def event(edge: Edge, organizer: str) -> dict:
    """Standard seats at $50 (4 rows of 10), VIP at $150 (2 rows of 5)."""
    return new_event(edge, organizer)


def hold(edge: Edge, token: str, event_id: str, **body: object) -> Reply:
    return edge.post(f"/v1/events/{event_id}/holds", body, token=token)


def book_hold(edge: Edge, token: str, hold_id: str, number: str = "4242424242424242") -> Reply:
    return edge.post(
        "/v1/bookings",
        {"hold_id": hold_id, "payment_method": card(number), "request_id": str(uuid.uuid4())},
        token=token,
    )


def statuses(edge: Edge, event: dict) -> dict[str, str]:
    seats = edge.get(f"/v1/events/{event['event_id']}/seats?page_size=1000").body["seats"]
    return {s["seat_id"]: s["status"].removeprefix("SEAT_STATUS_") for s in seats}


def seconds_until(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - time.time()


def test_hold_then_book_buys_exactly_the_hold(edge: Edge, event: dict, mesh: Mesh) -> None:
    buyer = register_and_login(edge, "twostep")
    made = hold(edge, buyer.access_token, event["event_id"], seat_ids=["VIP-1-2", "standard-2-1"])
    assert made.status == 200, made.body
    held = made.body
    assert [s["seat_id"] for s in held["seats"]] == ["vip-1-2", "standard-2-1"]
    assert [s["price"]["amount_minor"] for s in held["seats"]] == ["15000", "5000"]
    assert held["total"] == {"currency_code": "USD", "amount_minor": "20000"}
    assert held["renewals_left"] == 2
    assert 280 < seconds_until(held["expire_time"]) <= 300  # HOLD_TTL_SECONDS
    assert statuses(edge, event)["vip-1-2"] == "HELD"
    tiers = {t["tier"]: t for t in edge.get(f"/v1/events/{event['event_id']}").body["tiers"]}
    assert tiers["TIER_VIP"]["held"] == 1

    path = f"/v1/holds/{held['hold_id']}"
    assert edge.get(path, token=buyer.access_token).body == held
    # Only the owner sees or touches a hold.
    stranger = register_and_login(edge, "nosy")
    for reply in (
        edge.get(path, token=stranger.access_token),
        edge.post(path + ":renew", token=stranger.access_token),
        edge.call("DELETE", path, token=stranger.access_token),
        book_hold(edge, stranger.access_token, held["hold_id"]),
    ):
        assert_error(reply, 404)
        assert reply.reason == "HOLD_NOT_FOUND"
    assert_error(edge.get(path), 401)
    # Someone else cannot take a held seat.
    taken = book(edge, stranger.access_token, event["event_id"], ["vip-1-2"])
    assert taken.status == 409 and taken.reason == "SEAT_UNAVAILABLE"

    bought = book_hold(edge, buyer.access_token, held["hold_id"])
    assert bought.status == 200, bought.body
    assert bought.body["state"] == "BOOKING_STATE_CONFIRMED"
    assert [s["seat_id"] for s in bought.body["seats"]] == ["vip-1-2", "standard-2-1"]
    assert bought.body["total"] == held["total"]
    assert bought.body["event_id"] == event["event_id"]
    assert edge.get(path, token=buyer.access_token).body["booking_id"] == bought.body["booking_id"]
    assert {statuses(edge, event)[s] for s in ("vip-1-2", "standard-2-1")} == {"SOLD"}

    again = book_hold(edge, buyer.access_token, held["hold_id"])
    assert again.status == 400 and again.reason == "HOLD_USED", again.body
    assert edge.post(path + ":renew", token=buyer.access_token).reason == "HOLD_USED"
    assert audit_event(mesh, event["event_id"]).problems == []


def test_bad_hold_requests_are_refused_whole(edge: Edge, event: dict) -> None:
    buyer = register_and_login(edge, "sloppy")
    for body in (
        {},
        {"seat_ids": ["vip-1-1"], "best_available": {"tier": "TIER_VIP", "quantity": 1}},
        {"seat_ids": ["vip-9-9"]},
        {"best_available": {"tier": "TIER_VVIP", "quantity": 1}},
        {"best_available": {"tier": "TIER_VIP", "quantity": 11}},
        {"best_available": {"quantity": 1}},
    ):
        reply = hold(edge, buyer.access_token, event["event_id"], **body)
        assert_error(reply, 400)
    assert_error(hold(edge, buyer.access_token, str(uuid.uuid4()), seat_ids=["vip-1-1"]), 404)
    assert set(statuses(edge, event).values()) == {"AVAILABLE"}
    # A booking names seats or a hold, not both.
    both = edge.post(
        "/v1/bookings",
        {
            "hold_id": str(uuid.uuid4()),
            "seat_ids": ["vip-1-1"],
            "event_id": event["event_id"],
            "payment_method": card(),
        },
        token=buyer.access_token,
    )
    assert_error(both, 400)
    unknown = book_hold(edge, buyer.access_token, str(uuid.uuid4()))
    assert unknown.status == 404 and unknown.reason == "HOLD_NOT_FOUND"


def test_best_available_prefers_seats_side_by_side(edge: Edge, event: dict) -> None:
    buyer = register_and_login(edge, "best")
    first = hold(
        edge,
        buyer.access_token,
        event["event_id"],
        best_available={"tier": "TIER_VIP", "quantity": 3},
    )
    assert first.status == 200, first.body
    assert [s["seat_id"] for s in first.body["seats"]] == ["vip-1-1", "vip-1-2", "vip-1-3"]
    assert first.body["placement"] == "PLACEMENT_ADJACENT"
    # Row 1 has two left, row 2 loses its second seat: three together means row 2's end.
    blocker = register_and_login(edge, "blocker")
    assert hold(edge, blocker.access_token, event["event_id"], seat_ids=["vip-2-2"]).status == 200
    second = hold(
        edge,
        buyer.access_token,
        event["event_id"],
        best_available={"tier": "TIER_VIP", "quantity": 3},
    )
    assert [s["seat_id"] for s in second.body["seats"]] == ["vip-2-3", "vip-2-4", "vip-2-5"]
    assert second.body["placement"] == "PLACEMENT_ADJACENT"
    # Three seats are left (vip-1-4, vip-1-5, vip-2-1), no three together.
    third = hold(
        edge,
        buyer.access_token,
        event["event_id"],
        best_available={"tier": "TIER_VIP", "quantity": 3},
    )
    assert third.status == 200, third.body
    assert [s["seat_id"] for s in third.body["seats"]] == ["vip-1-4", "vip-1-5", "vip-2-1"]
    assert third.body["placement"] == "PLACEMENT_SPLIT"
    none_left = hold(
        edge,
        buyer.access_token,
        event["event_id"],
        best_available={"tier": "TIER_VIP", "quantity": 1},
    )
    assert none_left.status == 409 and none_left.reason == "SEAT_UNAVAILABLE"


def test_best_available_offers_front_seats_again_once_released(edge: Edge, event: dict) -> None:
    """Best-available starts where the tier's free seats begin (a cursor in
    Redis); releasing front seats must bring the search back to them."""
    buyer = register_and_login(edge, "front")
    standard = {"tier": "TIER_STANDARD", "quantity": 4}
    holds = [hold(edge, buyer.access_token, event["event_id"], best_available=standard).body]
    holds.append(hold(edge, buyer.access_token, event["event_id"], best_available=standard).body)
    assert [s["seat_id"] for s in holds[1]["seats"]] == [f"standard-1-{n}" for n in (5, 6, 7, 8)]
    path = f"/v1/holds/{holds[0]['hold_id']}"
    assert edge.call("DELETE", path, token=buyer.access_token).status == 200
    again = hold(edge, buyer.access_token, event["event_id"], best_available=standard)
    assert [s["seat_id"] for s in again.body["seats"]] == [f"standard-1-{n}" for n in (1, 2, 3, 4)]


def test_a_hold_renews_a_bounded_number_of_times_and_releases_at_once(
    edge: Edge, event: dict
) -> None:
    buyer = register_and_login(edge, "renewer")
    request_id = str(uuid.uuid4())
    held = hold(
        edge,
        buyer.access_token,
        event["event_id"],
        seat_ids=["standard-1-1"],
        request_id=request_id,
    ).body
    # The same request_id is the same hold; another user's is their own.
    assert (
        hold(
            edge,
            buyer.access_token,
            event["event_id"],
            seat_ids=["standard-1-1"],
            request_id=request_id,
        ).body
        == held
    )
    other = register_and_login(edge, "samereq")
    theirs = hold(
        edge,
        other.access_token,
        event["event_id"],
        seat_ids=["standard-1-2"],
        request_id=request_id,
    )
    assert theirs.status == 200 and theirs.body["hold_id"] != held["hold_id"]

    path = f"/v1/holds/{held['hold_id']}"
    expiry = seconds_until(held["expire_time"])
    for left in (1, 0):
        renewed = edge.post(path + ":renew", token=buyer.access_token)
        assert renewed.status == 200, renewed.body
        assert renewed.body["renewals_left"] == left
        grown = seconds_until(renewed.body["expire_time"])
        assert 299 < grown - expiry < 301  # each renewal adds the hold TTL
        expiry = grown
    exhausted = edge.post(path + ":renew", token=buyer.access_token)
    assert exhausted.status == 400 and exhausted.reason == "HOLD_RENEWALS_EXHAUSTED"

    released = edge.call("DELETE", path, token=buyer.access_token)
    assert released.status == 200, released.body
    assert statuses(edge, event)["standard-1-1"] == "AVAILABLE"  # at once, not at expiry
    assert edge.get(path, token=buyer.access_token).status == 404
    gone = book_hold(edge, buyer.access_token, held["hold_id"])
    assert gone.status == 404 and gone.reason == "HOLD_NOT_FOUND"
    # The seat is anyone's again.
    assert book(edge, other.access_token, event["event_id"], ["standard-1-1"]).status == 200


def test_an_expired_hold_is_refused_and_nothing_charged(
    edge: Edge, event: dict, mesh: Mesh
) -> None:
    buyer = register_and_login(edge, "late")
    held = hold(edge, buyer.access_token, event["event_id"], seat_ids=["vip-2-5"]).body
    # The hold lapses (its seat keys expire in Redis, as they would after the TTL).
    store = redis.Redis.from_url(mesh.env["REDIS_URL"], decode_responses=True)
    try:
        store.delete(f"ev:{{{event['event_id']}}}:hold:vip-2-5")
    finally:
        store.close()
    late = book_hold(edge, buyer.access_token, held["hold_id"])
    assert late.status == 400 and late.reason == "HOLD_EXPIRED", late.body
    bookings = edge.get("/v1/bookings", token=buyer.access_token).body.get("bookings", [])
    assert bookings == []  # no booking, no charge
    renew = edge.post(f"/v1/holds/{held['hold_id']}:renew", token=buyer.access_token)
    assert renew.reason == "HOLD_EXPIRED"
    assert audit_event(mesh, event["event_id"]).problems == []


def test_a_hold_survives_an_event_service_restart(edge: Edge, event: dict, mesh: Mesh) -> None:
    """A hold lives in Redis, not in the event service: restarted, the service
    still shows it, unchanged, and the hold still buys its seats."""
    buyer = register_and_login(edge, "patient")
    held = hold(edge, buyer.access_token, event["event_id"], seat_ids=["standard-3-3"]).body
    mesh.restart("event")
    again = edge.get(f"/v1/holds/{held['hold_id']}", token=buyer.access_token)
    assert again.status == 200, again.body
    assert again.body == held
    assert statuses(edge, event)["standard-3-3"] == "HELD"
    # Booking's channel to event may still be backing off from the restart:
    # until it reconnects, booking answers 503 (retry) and the hold stays whole.
    booked = wait_for(
        lambda: (
            (r := book_hold(edge, buyer.access_token, held["hold_id"])).reason
            != "EVENT_SERVICE_UNAVAILABLE"
            and r
        ),
        "booking to reach the restarted event service",
    )
    assert booked.status == 200 and booked.body["state"] == "BOOKING_STATE_CONFIRMED", booked.body
    assert audit_event(mesh, event["event_id"]).problems == []


def test_two_users_holding_overlapping_seats_one_wins(edge: Edge, event: dict) -> None:
    buyers = [register_and_login(edge, f"racer{i}") for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        replies = list(
            pool.map(
                lambda b: hold(
                    edge, b.access_token, event["event_id"], seat_ids=["vip-1-3", "vip-1-4"]
                ),
                buyers,
            )
        )
    assert sorted(r.status for r in replies) == [200] + [409] * 7, [r.body for r in replies]
    assert all(r.reason == "SEAT_UNAVAILABLE" for r in replies if r.status == 409)


def test_the_ticket_limit_holds_under_sixteen_parallel_attempts(edge: Edge, organizer: str) -> None:
    event = new_event(edge, organizer, max_tickets_per_user=4)
    assert event["max_tickets_per_user"] == 4
    buyer = register_and_login(edge, "greedy")
    seats = [f"standard-{1 + i // 10}-{1 + i % 10}" for i in range(16)]

    def attempt(i: int) -> Reply:
        if i % 2:  # one-step bookings and holds, all at once
            return book(edge, buyer.access_token, event["event_id"], [seats[i]])
        return hold(edge, buyer.access_token, event["event_id"], seat_ids=[seats[i]])

    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(attempt, range(16)))
    won = [r for r in replies if r.status == 200]
    refused = [r for r in replies if r.status != 200]
    assert len(won) == 4, [(r.status, r.body) for r in replies]
    assert {(r.status, r.reason) for r in refused} == {(400, "TICKET_LIMIT_EXCEEDED")}
    # Confirmed seats count as much as held ones; another user is not limited by them.
    more = hold(edge, buyer.access_token, event["event_id"], seat_ids=["vip-1-1"])
    assert more.status == 400 and more.reason == "TICKET_LIMIT_EXCEEDED"
    friend = register_and_login(edge, "friend")
    assert hold(edge, friend.access_token, event["event_id"], seat_ids=["vip-1-1"]).status == 200
    # Letting a hold go, or cancelling a booking, makes room again.
    a_hold = next((r.body for r in won if "hold_id" in r.body), None)
    a_booking = next(
        (r.body for r in won if "booking_id" in r.body and "hold_id" not in r.body), None
    )
    freed = 0
    if a_hold is not None:
        assert (
            edge.call("DELETE", f"/v1/holds/{a_hold['hold_id']}", token=buyer.access_token).status
            == 200
        )
        freed += 1
    if a_booking is not None:
        cancel = edge.post(
            f"/v1/bookings/{a_booking['booking_id']}:cancel", token=buyer.access_token
        )
        assert cancel.status == 200, cancel.body
        freed += 1
    again = [
        hold(edge, buyer.access_token, event["event_id"], seat_ids=[f"vip-2-{n}"])
        for n in (1, 2, 3)
    ]
    assert [r.status for r in again] == [200] * freed + [400] * (3 - freed)


def test_the_ticket_limit_counts_bought_seats_after_redis_lost_them(
    edge: Edge, organizer: str, mesh: Mesh
) -> None:
    """Redis keeps the per-user counts; when it loses an event's keys, the
    rebuild from PostgreSQL (which records each sold seat's buyer) restores
    them, so a restart of Redis is no way past max_tickets_per_user."""
    event = new_event(edge, organizer, max_tickets_per_user=2)
    buyer = register_and_login(edge, "twice")
    assert book(edge, buyer.access_token, event["event_id"], ["standard-1-1"]).status == 200
    held = hold(edge, buyer.access_token, event["event_id"], seat_ids=["standard-1-2"])
    assert book_hold(edge, buyer.access_token, held.body["hold_id"]).status == 200
    store = redis.Redis.from_url(mesh.env["REDIS_URL"], decode_responses=True)
    try:
        for key in store.scan_iter(f"ev:{{{event['event_id']}}}:*"):
            store.delete(key)  # the markers flag goes with them: the next hold rebuilds
    finally:
        store.close()
    more = hold(edge, buyer.access_token, event["event_id"], seat_ids=["standard-1-3"])
    assert (more.status, more.reason) == (400, "TICKET_LIMIT_EXCEEDED"), more.body
    friend = register_and_login(edge, "notlimited")
    theirs = hold(edge, friend.access_token, event["event_id"], seat_ids=["standard-1-3"])
    assert theirs.status == 200, theirs.body
    assert statuses(edge, event)["standard-1-2"] == "SOLD"
