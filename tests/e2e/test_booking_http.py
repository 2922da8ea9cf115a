"""Buying and cancelling tickets through Envoy, checked across services."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from scripts.mesh import Mesh
from tests.audit import audit_event
from tests.e2e.test_auth_http import assert_error
from tests.support import (
    VISA_DECLINED,
    VISA_NO_FUNDS,
    Edge,
    book,
    card,
    error_reason_metadata,
    event_body,
    mint_token,
    register_and_login,
)


@pytest.fixture
def event(edge: Edge, organizer: str) -> dict:
    """Standard seats at $50 (4 rows of 10), VIP at $150 (2 rows of 5)."""
    reply = edge.post("/v1/events", event_body(), token=organizer)
    assert reply.status == 200, reply.body
    return reply.body


def counts(edge: Edge, event: dict) -> dict[str, tuple[int, int, int]]:
    tiers = edge.get(f"/v1/events/{event['event_id']}").body["tiers"]
    return {t["tier"]: (t["available"], t["held"], t["sold"]) for t in tiers}


def seat_statuses(edge: Edge, event: dict) -> dict[str, str]:
    seats = edge.get(f"/v1/events/{event['event_id']}/seats?page_size=1000").body["seats"]
    return {s["seat_id"]: s["status"].removeprefix("SEAT_STATUS_") for s in seats}


def test_a_purchase_across_two_tiers(edge: Edge, event: dict, mesh: Mesh) -> None:
    buyer = register_and_login(edge, "buyer")
    reply = book(
        edge, buyer.access_token, event["event_id"], ["VIP-1-1", "standard-2-5", "normal-2-6"]
    )
    assert reply.status == 200, reply.body
    booking = reply.body
    assert booking["state"] == "BOOKING_STATE_CONFIRMED"
    assert booking["user_id"] == buyer.user_id
    assert [s["seat_id"] for s in booking["seats"]] == ["vip-1-1", "standard-2-5", "standard-2-6"]
    assert [s["price"]["amount_minor"] for s in booking["seats"]] == ["15000", "5000", "5000"]
    assert booking["total"] == {"currency_code": "USD", "amount_minor": "25000"}

    statuses = seat_statuses(edge, event)
    assert {statuses[s] for s in ("vip-1-1", "standard-2-5", "standard-2-6")} == {"SOLD"}
    assert counts(edge, event) == {"TIER_STANDARD": (38, 0, 2), "TIER_VIP": (9, 0, 1)}

    payment = edge.get(f"/v1/payments/{booking['payment_id']}", token=buyer.access_token)
    assert payment.status == 200, payment.body
    assert payment.body["state"] == "PAYMENT_STATE_SUCCEEDED"
    assert payment.body["amount"] == booking["total"]
    assert payment.body["card_last4"] == "4242"
    assert "4242424242424242" not in str(payment.body)

    fetched = edge.get(f"/v1/bookings/{booking['booking_id']}", token=buyer.access_token)
    assert fetched.status == 200 and fetched.body == booking
    assert audit_event(mesh, event["event_id"]).problems == []


@pytest.mark.parametrize(
    ("number", "reason"), [(VISA_DECLINED, "card_declined"), (VISA_NO_FUNDS, "insufficient_funds")]
)
def test_a_declined_card_fails_the_booking_and_frees_the_seats(
    edge: Edge,
    event: dict,
    mesh: Mesh,
    number: str,
    reason: str,
) -> None:
    buyer = register_and_login(edge, "declined")
    reply = book(edge, buyer.access_token, event["event_id"], ["vip-2-1", "vip-2-2"], number)
    assert_error(reply, 400)
    assert reply.reason == "PAYMENT_DECLINED"
    booking_id = error_reason_metadata(reply)["booking_id"]
    failed = edge.get(f"/v1/bookings/{booking_id}", token=buyer.access_token).body
    assert (failed["state"], failed["failure_reason"]) == ("BOOKING_STATE_FAILED", reason)
    assert counts(edge, event)["TIER_VIP"] == (10, 0, 0)  # free again at once
    audit = audit_event(mesh, event["event_id"])
    assert audit.payments[booking_id] == "PAYMENT_STATE_DECLINED"
    assert audit.problems == []
    # The seats can be bought straight away by someone else.
    other = register_and_login(edge, "next")
    assert book(edge, other.access_token, event["event_id"], ["vip-2-1"]).status == 200


def test_the_same_request_twice_at_once_is_one_booking_one_charge(
    edge: Edge, event: dict, mesh: Mesh
) -> None:
    buyer = register_and_login(edge, "twice")
    request_id = str(uuid.uuid4())

    def attempt(_: int) -> dict:
        # A retry of a booking still settling answers 503 BOOKING_PENDING within
        # moments; the client asks again, with the same request_id.
        for _ in range(20):
            reply = book(
                edge,
                buyer.access_token,
                event["event_id"],
                ["vip-1-3", "vip-1-4"],
                request_id=request_id,
            )
            if reply.reason != "BOOKING_PENDING":
                break
            assert "retry-after" in reply.headers
        assert reply.status == 200, reply.body
        return reply.body

    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(attempt, range(4)))
    assert len({r["booking_id"] for r in replies}) == 1
    assert {r["state"] for r in replies} == {"BOOKING_STATE_CONFIRMED"}
    audit = audit_event(mesh, event["event_id"])
    assert list(audit.bookings.values()) == ["CONFIRMED"]
    assert audit.problems == []
    # And a later retry answers the same, without charging again.
    again = book(
        edge, buyer.access_token, event["event_id"], ["vip-1-3", "vip-1-4"], request_id=request_id
    )
    assert again.body == replies[0] | {"update_time": again.body["update_time"]}
    assert len(audit_event(mesh, event["event_id"]).payments) == 1


def test_a_hundred_buyers_race_for_twenty_seats(
    edge: Edge, event: dict, mesh: Mesh, keys_dir: Path
) -> None:
    pairs = [[f"standard-1-{2 * k + 1}", f"standard-1-{2 * k + 2}"] for k in range(5)] + [
        [f"standard-2-{2 * k + 1}", f"standard-2-{2 * k + 2}"] for k in range(5)
    ]
    buyers = [mint_token(keys_dir, email=f"racer{i}@example.com") for i in range(100)]

    def attempt(i: int) -> tuple[int, str]:
        reply = book(edge, buyers[i], event["event_id"], pairs[i % 10])
        return reply.status, reply.reason

    with ThreadPoolExecutor(32) as pool:
        outcomes = list(pool.map(attempt, range(100)))
    assert outcomes.count((200, "")) == 10, outcomes
    assert sorted(set(outcomes)) == [(200, ""), (409, "SEAT_UNAVAILABLE")]
    audit = audit_event(mesh, event["event_id"])
    assert len(audit.by_state("CONFIRMED")) == 10
    assert set(audit.bookings.values()) == {"CONFIRMED"}  # losers left no record...
    assert len(audit.payments) == 10  # ...and no charge
    assert sorted(audit.sold) == sorted(s for pair in pairs for s in pair)
    assert audit.held == 0
    assert audit.problems == []


def test_cancel_refunds_and_puts_the_seats_back(edge: Edge, event: dict, mesh: Mesh) -> None:
    buyer = register_and_login(edge, "canceller")
    booking = book(edge, buyer.access_token, event["event_id"], ["vip-1-5"]).body
    stranger = register_and_login(edge, "stranger")
    assert_error(
        edge.post(f"/v1/bookings/{booking['booking_id']}:cancel", token=stranger.access_token), 404
    )
    assert_error(
        edge.get(f"/v1/bookings/{booking['booking_id']}", token=stranger.access_token), 404
    )

    cancelled = edge.post(f"/v1/bookings/{booking['booking_id']}:cancel", token=buyer.access_token)
    assert cancelled.status == 200, cancelled.body
    assert cancelled.body["state"] == "BOOKING_STATE_CANCELLED"
    payment = edge.get(f"/v1/payments/{booking['payment_id']}", token=buyer.access_token).body
    assert payment["state"] == "PAYMENT_STATE_REFUNDED"
    assert payment["refunded_amount"] == booking["total"]
    assert seat_statuses(edge, event)["vip-1-5"] == "AVAILABLE"
    assert counts(edge, event)["TIER_VIP"] == (10, 0, 0)

    again = edge.post(f"/v1/bookings/{booking['booking_id']}:cancel", token=buyer.access_token)
    assert_error(again, 400)
    assert again.reason == "BOOKING_NOT_CANCELLABLE"
    assert audit_event(mesh, event["event_id"]).problems == []


def test_listing_shows_own_bookings_and_admins_see_all(
    edge: Edge, event: dict, keys_dir: Path
) -> None:
    buyer = register_and_login(edge, "lister")
    mine = [
        book(edge, buyer.access_token, event["event_id"], [f"standard-3-{n}"]).body
        for n in (1, 2, 3)
    ]
    book(edge, buyer.access_token, event["event_id"], ["standard-3-4"], VISA_DECLINED)
    other = register_and_login(edge, "other")
    book(edge, other.access_token, event["event_id"], ["standard-3-9"])

    seen, token = [], ""
    while True:
        page = edge.get(f"/v1/bookings?page_size=2&page_token={token}", token=buyer.access_token)
        assert page.status == 200 and len(page.body["bookings"]) <= 2
        seen += page.body["bookings"]
        token = page.body["next_page_token"]
        if not token:
            break
    assert len(seen) == 4 and {b["user_id"] for b in seen} == {buyer.user_id}
    times = [b["create_time"] for b in seen]
    assert times == sorted(times, reverse=True)  # newest first
    assert seen[0]["state"] == "BOOKING_STATE_FAILED"  # the declined one came last
    confirmed = edge.get(
        "/v1/bookings?state=BOOKING_STATE_CONFIRMED&page_size=100", token=buyer.access_token
    ).body["bookings"]
    assert sorted(b["booking_id"] for b in confirmed) == sorted(b["booking_id"] for b in mine)
    admin = mint_token(keys_dir, role="admin")
    everyone = edge.get("/v1/bookings?page_size=100", token=admin).body["bookings"]
    assert {buyer.user_id, other.user_id} <= {b["user_id"] for b in everyone}


def test_bad_bookings_are_refused_without_a_trace(edge: Edge, event: dict, mesh: Mesh) -> None:
    buyer = register_and_login(edge, "careless")
    token = buyer.access_token
    event_id = event["event_id"]

    no_seats = edge.post(
        "/v1/bookings",
        {"event_id": event_id, "seat_ids": [], "payment_method": card()},
        token=token,
    )
    assert_error(no_seats, 400)
    assert "seat_ids" in no_seats.violations

    bad_seat = book(edge, token, event_id, ["vip-1-1", "vip-9-9"])
    assert_error(bad_seat, 400)
    assert "seat_ids[1]" in bad_seat.violations

    bad_card = edge.post(
        "/v1/bookings",
        {
            "event_id": event_id,
            "seat_ids": ["vip-2-5"],
            "request_id": str(uuid.uuid4()),
            "payment_method": {
                "card_number": "4242424242424241",
                "exp_month": 13,
                "exp_year": 2020,
                "cvc": "1",
            },
        },
        token=token,
    )
    assert_error(bad_card, 400)
    assert {"payment_method.card_number", "payment_method.exp_month", "payment_method.cvc"} <= set(
        bad_card.violations
    )

    assert_error(book(edge, token, str(uuid.uuid4()), ["vip-1-1"]), 404)
    assert_error(book(edge, token, "not-an-id", ["vip-1-1"]), 400)
    assert_error(
        edge.post("/v1/bookings", {"event_id": event_id, "seat_ids": ["vip-1-1"]}, token=token), 400
    )
    assert_error(book(edge, "", event_id, ["vip-1-1"]), 401)
    assert_error(edge.call("POST", "/v1/bookings", raw=b'{"seat_ids": "vip-1-1"', token=token), 400)

    listed = edge.get("/v1/bookings", token=token).body["bookings"]
    assert listed == []
    assert counts(edge, event)["TIER_VIP"] == (10, 0, 0)
    assert audit_event(mesh, event_id).bookings == {}


def test_contention_five_hundred_buyers_for_a_hundred_seats(
    edge: Edge, organizer: str, mesh: Mesh, keys_dir: Path
) -> None:
    reply = edge.post(
        "/v1/events", event_body(tiers=[("TIER_STANDARD", 2500, 10, 10)]), token=organizer
    )
    event_id = reply.body["event_id"]
    seats = [f"standard-{row}-{n}" for row in range(1, 11) for n in range(1, 11)]
    buyers = [mint_token(keys_dir, email=f"crowd{i}@example.com") for i in range(500)]

    def attempt(i: int) -> tuple[int, str]:
        # Five buyers want each seat; some also want its neighbour.
        wanted = [seats[i % 100]] + ([seats[(i + 1) % 100]] if i % 7 == 0 else [])
        outcome = book(edge, buyers[i], event_id, wanted)
        return outcome.status, outcome.reason

    with ThreadPoolExecutor(48) as pool:
        outcomes = list(pool.map(attempt, range(500)))
    assert set(outcomes) <= {(200, ""), (409, "SEAT_UNAVAILABLE")}, set(outcomes)
    audit = audit_event(mesh, event_id)
    assert audit.problems == []
    assert sorted(audit.sold) == sorted(seats)  # sold out, each seat once
    assert len(audit.sold) == len(set(audit.sold))
    confirmed = audit.by_state("CONFIRMED")
    assert outcomes.count((200, "")) == len(confirmed) == len(audit.payments)
    assert set(audit.bookings.values()) == {"CONFIRMED"}  # losers left no trace
    assert audit.held == 0
