"""Events and seat maps through Envoy, as curl sees them."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.e2e.test_auth_http import assert_error
from tests.support import Edge, event_body, login, register_and_login, wait_for
from ticketing.event.v1 import event_pb2, event_pb2_grpc


@pytest.fixture(scope="module")
def organizer(edge: Edge) -> str:
    """A real organizer: registered, promoted by the admin, signed in again."""
    account = register_and_login(edge, "organizer")
    admin = login(edge, ADMIN_EMAIL, ADMIN_PASSWORD)
    promoted = edge.post(
        f"/v1/users/{account.user_id}:setRole", {"role": "ROLE_ORGANIZER"}, token=admin
    )
    assert promoted.status == 200
    return login(edge, account.email, account.password)


def create(edge: Edge, token: str, **kwargs: object) -> dict:
    reply = edge.post("/v1/events", event_body(**kwargs), token=token)
    assert reply.status == 200, reply.body
    return reply.body


def test_organizer_creates_an_event(edge: Edge, organizer: str) -> None:
    event = create(edge, organizer, title="Opening night")
    assert event["title"] == "Opening night"
    assert [t["tier"] for t in event["tiers"]] == ["TIER_STANDARD", "TIER_VIP"]
    vip = event["tiers"][1]
    assert vip == {
        "tier": "TIER_VIP",
        "price": {"currency_code": "USD", "amount_minor": "15000"},
        "rows": 2,
        "seats_per_row": 5,
        "capacity": 10,
        "available": 10,
        "held": 0,
        "sold": 0,
        "checked_in": 0,
    }
    fetched = edge.get(f"/v1/events/{event['event_id']}")
    assert fetched.status == 200 and fetched.body == event
    # Availability is served from a snapshot up to a second old; caches may keep it as long.
    assert fetched.headers["cache-control"] == "public, max-age=1"


def test_plain_users_get_403_and_strangers_401(edge: Edge) -> None:
    user = register_and_login(edge)
    assert_error(edge.post("/v1/events", event_body(), token=user.access_token), 403)
    assert_error(edge.post("/v1/events", event_body()), 401)


def test_bad_events_are_400_with_violations(edge: Edge, organizer: str) -> None:
    body = event_body(starts_in=timedelta(days=-1), tiers=[("TIER_VIP", 100, 0, 5)])
    reply = edge.post("/v1/events", body, token=organizer)
    assert_error(reply, 400)
    assert set(reply.violations) == {"event.starts_at", "event.tiers[0].rows"}
    assert_error(
        edge.post(
            "/v1/events", {**event_body(), "tiers": [{"tier": "TIER_GOLD"}]}, token=organizer
        ),
        400,
    )


def test_list_events_pages_and_hides_started_events(edge: Edge, organizer: str) -> None:
    soon = create(edge, organizer, title="Starts at once", starts_in=timedelta(seconds=2))
    later = [create(edge, organizer, title=f"Later {i}") for i in range(3)]
    wait_for(
        lambda: datetime.now(UTC) > datetime.fromisoformat(soon["starts_at"]),
        "the first event to start",
        timeout=10,
    )
    seen, token = [], ""
    while True:
        page = edge.get(f"/v1/events?page_size=2&page_token={token}")
        assert page.status == 200 and len(page.body["events"]) <= 2
        seen += [e["event_id"] for e in page.body["events"]]
        token = page.body["next_page_token"]
        if not token:
            break
    assert len(seen) == len(set(seen))
    assert {e["event_id"] for e in later} <= set(seen)
    assert soon["event_id"] not in seen
    everything = edge.get("/v1/events?page_size=100&include_started=true")
    assert soon["event_id"] in {e["event_id"] for e in everything.body["events"]}


def test_list_seats_filters_by_tier_and_status(edge: Edge, organizer: str, mesh) -> None:
    event = create(edge, organizer)
    with mesh.channel("event", "booking") as channel:  # the hold RPCs are booking's
        stub = event_pb2_grpc.EventServiceStub(channel)
        booking = str(uuid.uuid4())
        sold = stub.LockSeat(
            event_pb2.LockSeatRequest(
                event_id=event["event_id"], seat_ids=["vip-1-1", "vip-1-2"], owner=booking
            )
        )
        stub.ConfirmSeats(
            event_pb2.ConfirmSeatsRequest(
                event_id=event["event_id"],
                seat_ids=["vip-1-1", "vip-1-2"],
                owner_token=booking,
                fencing_token=sold.fencing_token,
                booking_id=booking,
            )
        )
        stub.LockSeat(
            event_pb2.LockSeatRequest(
                event_id=event["event_id"], seat_ids=["vip-1-3", "standard-1-1"], owner="holder"
            )
        )

    base = f"/v1/events/{event['event_id']}/seats"
    vip = edge.get(f"{base}?tier=TIER_VIP&page_size=100").body["seats"]
    assert [s["seat_id"] for s in vip] == [f"vip-{r}-{n}" for r in (1, 2) for n in range(1, 6)]
    statuses = {s["seat_id"]: s["status"] for s in vip}
    assert statuses["vip-1-1"] == statuses["vip-1-2"] == "SEAT_STATUS_SOLD"
    assert statuses["vip-1-3"] == "SEAT_STATUS_HELD"
    assert statuses["vip-2-5"] == "SEAT_STATUS_AVAILABLE"
    assert vip[0]["price"] == {"currency_code": "USD", "amount_minor": "15000"}

    held = edge.get(f"{base}?status=SEAT_STATUS_HELD").body["seats"]
    assert [s["seat_id"] for s in held] == ["standard-1-1", "vip-1-3"]
    sold_seats = edge.get(f"{base}?status=SEAT_STATUS_SOLD").body["seats"]
    assert [s["seat_id"] for s in sold_seats] == ["vip-1-1", "vip-1-2"]
    available = edge.get(f"{base}?status=SEAT_STATUS_AVAILABLE&tier=TIER_VIP&page_size=3").body
    assert [s["seat_id"] for s in available["seats"]] == ["vip-1-4", "vip-1-5", "vip-2-1"]
    rest = edge.get(
        f"{base}?status=SEAT_STATUS_AVAILABLE&tier=TIER_VIP&page_size=100"
        f"&page_token={available['next_page_token']}"
    ).body
    assert [s["seat_id"] for s in rest["seats"]] == ["vip-2-2", "vip-2-3", "vip-2-4", "vip-2-5"]
    assert rest["next_page_token"] == ""

    counts = {
        t["tier"]: (t["available"], t["held"], t["sold"])
        for t in edge.get(f"/v1/events/{event['event_id']}").body["tiers"]
    }
    assert counts == {"TIER_STANDARD": (39, 1, 0), "TIER_VIP": (7, 1, 2)}


def test_bad_ids_are_400_and_unknown_events_404(edge: Edge) -> None:
    malformed = edge.get("/v1/events/not-an-id")
    assert_error(malformed, 400)
    assert malformed.violations == {"event_id": "is not a valid id"}
    assert_error(edge.get(f"/v1/events/{uuid.uuid4()}"), 404)
    assert_error(edge.get(f"/v1/events/{uuid.uuid4()}/seats"), 404)
    assert_error(edge.get("/v1/events?page_token=garbage!"), 400)
    assert_error(edge.get("/v1/events?page_size=-1"), 400)


def test_seat_listing_rejects_bad_filters(edge: Edge, organizer: str) -> None:
    event = create(edge, organizer)
    base = f"/v1/events/{event['event_id']}/seats"
    assert_error(edge.get(f"{base}?tier=TIER_GOLD"), 400)
    assert_error(edge.get(f"{base}?status=7"), 400)
    assert_error(edge.get(f"{base}?page_token=%7B%7D"), 400)


def test_hold_rpcs_are_not_reachable_through_envoy(edge: Edge) -> None:
    for method in ("LockSeat", "ReleaseSeat", "ConfirmSeats", "ReturnSeats"):
        assert_error(edge.post(f"/ticketing.event.v1.EventService/{method}", {}), 404)


def test_a_hundred_thousand_seat_event(edge: Edge, organizer: str) -> None:
    started = time.perf_counter()
    event = create(
        edge,
        organizer,
        title="Stadium",
        tiers=[
            ("TIER_STANDARD", 4000, 200, 400),
            ("TIER_VIP", 12000, 40, 400),
            ("TIER_VVIP", 50000, 10, 400),
        ],
    )
    print(f"\n100,000-seat event created in {time.perf_counter() - started:.2f}s")
    assert sum(t["capacity"] for t in event["tiers"]) == 100_000
    fetched = edge.get(f"/v1/events/{event['event_id']}")
    assert [t["available"] for t in fetched.body["tiers"]] == [80_000, 16_000, 4_000]
    last = edge.get(
        f"/v1/events/{event['event_id']}/seats?tier=TIER_VVIP&page_size=1000"
        "&page_token=" + _after("vvip-10-1")
    )
    assert last.body["seats"][-1]["seat_id"] == "vvip-10-400"


def _after(seat_id: str) -> str:
    from runtime.pagination import encode_token

    return encode_token({"after": seat_id})
