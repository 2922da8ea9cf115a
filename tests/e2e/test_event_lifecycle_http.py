"""An event's life through Envoy: drafts, publishing, the sale window, and
edits with an update mask and an etag (AIP-134, AIP-154)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.e2e.test_auth_http import assert_error
from tests.support import Edge, Reply, book, event_body, login, mint_token, wait_for


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture(scope="module")
def rival(keys_dir: Path) -> str:
    """Another organizer, who must not touch the first one's events."""
    return mint_token(keys_dir, role="organizer")


@pytest.fixture(scope="module")
def buyer(keys_dir: Path) -> str:
    return mint_token(keys_dir, email="buyer@example.com")


@pytest.fixture(scope="module")
def admin(edge: Edge) -> str:
    return login(edge, ADMIN_EMAIL, ADMIN_PASSWORD)


def create(edge: Edge, token: str, **fields: Any) -> dict[str, Any]:
    reply = edge.post("/v1/events", {**event_body(), **fields}, token=token)
    assert reply.status == 200, reply.body
    return reply.body


def patch(edge: Edge, token: str, event_id: str, mask: str, event: dict[str, Any]) -> Reply:
    return edge.call("PATCH", f"/v1/events/{event_id}?update_mask={mask}", event, token=token)


def test_an_event_created_without_a_state_is_published_at_once(
    edge: Edge, organizer: str, buyer: str
) -> None:
    event = create(edge, organizer)
    assert event["state"] == "EVENT_STATE_PUBLISHED"
    assert event["etag"] and "cancellation" not in event
    assert edge.get(f"/v1/events/{event['event_id']}").body["state"] == "EVENT_STATE_PUBLISHED"
    assert book(edge, buyer, event["event_id"], ["standard-1-1"]).status == 200


def test_a_draft_is_seen_by_its_organizer_and_admins_only_until_published(
    edge: Edge, organizer: str, rival: str, buyer: str, admin: str
) -> None:
    draft = create(edge, organizer, state="EVENT_STATE_DRAFT", title="Secret gig")
    event_id = draft["event_id"]
    assert draft["state"] == "EVENT_STATE_DRAFT"
    path = f"/v1/events/{event_id}"
    assert edge.get(path, token=organizer).status == 200
    assert edge.get(path, token=admin).status == 200
    for stranger in (None, buyer, rival):
        assert_error(edge.get(path, token=stranger), 404)
        assert_error(edge.get(f"{path}/seats", token=stranger), 404)

    def listed(token: str | None) -> bool:
        found = edge.get("/v1/events?page_size=100&query=Secret%20gig", token=token)
        assert found.status == 200, found.body
        return event_id in [e["event_id"] for e in found.body.get("events", [])]

    assert listed(organizer) and listed(admin)
    assert not listed(None) and not listed(buyer) and not listed(rival)
    # A draft cannot be bought, and it does not say it exists.
    refused = book(edge, buyer, event_id, ["standard-1-1"])
    assert_error(refused, 404)

    assert_error(edge.post(f"{path}:publish", {}, token=rival), 404)
    assert_error(edge.post(f"{path}:publish", {}, token=buyer), 403)
    published = edge.post(f"{path}:publish", {}, token=organizer)
    assert published.status == 200, published.body
    assert published.body["state"] == "EVENT_STATE_PUBLISHED"
    assert published.body["etag"] != draft["etag"]
    # Publishing again changes nothing.
    again = edge.post(f"{path}:publish", {}, token=organizer)
    assert again.status == 200 and again.body["etag"] == published.body["etag"]
    assert edge.get(path).status == 200 and listed(None)
    assert book(edge, buyer, event_id, ["standard-1-1"]).status == 200


def test_a_new_event_is_a_draft_or_published(edge: Edge, organizer: str) -> None:
    reply = edge.post(
        "/v1/events", {**event_body(), "state": "EVENT_STATE_CANCELLED"}, token=organizer
    )
    assert_error(reply, 400)
    assert set(reply.violations) == {"event.state"}


def test_seats_sell_only_within_the_sale_window(edge: Edge, organizer: str, buyer: str) -> None:
    now = datetime.now(UTC)
    later = create(edge, organizer, sale_start_time=rfc3339(now + timedelta(days=1)))
    refused = book(edge, buyer, later["event_id"], ["standard-1-1"])
    assert_error(refused, 400)
    assert refused.reason == "SALE_NOT_OPEN"

    # Clearing the start (named in the mask, not given) opens the sale.
    opened = patch(edge, organizer, later["event_id"], "sale_start_time", {})
    assert opened.status == 200, opened.body
    assert "sale_start_time" not in opened.body
    assert book(edge, buyer, later["event_id"], ["standard-1-1"]).status == 200

    closing = create(edge, organizer, sale_end_time=rfc3339(now + timedelta(seconds=3)))
    seats = iter(f"standard-{row}-{n}" for row in range(1, 5) for n in range(1, 11))
    assert book(edge, buyer, closing["event_id"], [next(seats)]).status == 200
    ended = wait_for(
        lambda: (r := book(edge, buyer, closing["event_id"], [next(seats)])).status == 400 and r,
        "the sale to end",
    )
    assert ended.reason == "SALE_ENDED"


def test_a_sale_window_must_fit_before_the_event(edge: Edge, organizer: str) -> None:
    starts = datetime.now(UTC) + timedelta(days=30)
    body = {
        **event_body(starts_in=timedelta(days=30)),
        "sale_start_time": rfc3339(starts - timedelta(days=1)),
        "sale_end_time": rfc3339(starts - timedelta(days=2)),
    }
    reply = edge.post("/v1/events", body, token=organizer)
    assert_error(reply, 400)
    assert set(reply.violations) == {"event.sale_end_time"}
    body = {
        **event_body(starts_in=timedelta(days=30)),
        "sale_end_time": rfc3339(starts + timedelta(days=1)),
    }
    reply = edge.post("/v1/events", body, token=organizer)
    assert_error(reply, 400)
    assert set(reply.violations) == {"event.sale_end_time"}


def test_an_organizer_edits_an_event_with_a_mask_and_its_etag(edge: Edge, organizer: str) -> None:
    event = create(edge, organizer, title="Typo nigth")
    fixed = patch(
        edge,
        organizer,
        event["event_id"],
        "title,venue",
        {
            "title": " Typo night ",
            "venue": "Small Hall",
            "description": "not in the mask",
            "etag": event["etag"],
        },
    )
    assert fixed.status == 200, fixed.body
    assert (fixed.body["title"], fixed.body["venue"]) == ("Typo night", "Small Hall")
    assert fixed.body["description"] == event["description"]  # not named in the mask
    assert fixed.body["etag"] != event["etag"]
    assert fixed.body["update_time"] > event["update_time"]
    assert edge.get(f"/v1/events/{event['event_id']}").body["title"] == "Typo night"

    # The etag read before the change is stale now.
    stale = patch(
        edge, organizer, event["event_id"], "title", {"title": "X", "etag": event["etag"]}
    )
    assert_error(stale, 409)
    assert stale.reason == "ETAG_MISMATCH"
    assert edge.get(f"/v1/events/{event['event_id']}").body["title"] == "Typo night"

    moved = datetime.now(UTC) + timedelta(days=60)
    later = patch(edge, organizer, event["event_id"], "starts_at", {"starts_at": rfc3339(moved)})
    assert later.status == 200, later.body
    assert datetime.fromisoformat(later.body["starts_at"]) > datetime.fromisoformat(
        event["starts_at"]
    )


def test_bad_updates_are_4xx(
    edge: Edge, organizer: str, rival: str, buyer: str, admin: str
) -> None:
    event = create(edge, organizer)
    event_id = event["event_id"]
    unknown = patch(edge, organizer, event_id, "organizer_id", {"organizer_id": str(uuid.uuid4())})
    assert_error(unknown, 400)
    assert set(unknown.violations) == {"update_mask"}
    empty = edge.call("PATCH", f"/v1/events/{event_id}", {"title": "x"}, token=organizer)
    assert_error(empty, 400)
    assert set(empty.violations) == {"update_mask"}
    blank = patch(edge, organizer, event_id, "title,starts_at", {"title": "  "})
    assert_error(blank, 400)
    assert set(blank.violations) == {"event.title", "event.starts_at"}
    past = patch(edge, organizer, event_id, "starts_at", {"starts_at": rfc3339(datetime.now(UTC))})
    assert_error(past, 400)
    assert set(past.violations) == {"event.starts_at"}
    assert_error(patch(edge, rival, event_id, "title", {"title": "Mine"}), 403)
    assert_error(patch(edge, buyer, event_id, "title", {"title": "Mine"}), 403)
    assert_error(patch(edge, organizer, str(uuid.uuid4()), "title", {"title": "x"}), 404)
    assert_error(patch(edge, organizer, "not-an-id", "title", {"title": "x"}), 400)
    assert_error(patch(edge, None, event_id, "title", {"title": "x"}), 401)
    # An admin may edit anyone's event.
    assert patch(edge, admin, event_id, "description", {"description": "by admin"}).status == 200
    assert edge.get(f"/v1/events/{event_id}").body["title"] == event["title"]


def test_new_prices_apply_to_later_bookings_only(edge: Edge, organizer: str, buyer: str) -> None:
    event = create(edge, organizer)
    before = book(edge, buyer, event["event_id"], ["vip-1-1"])
    assert before.status == 200 and before.body["total"]["amount_minor"] == "15000"
    tiers = [
        {
            **t,
            "price": {
                "currency_code": "USD",
                "amount_minor": str(int(t["price"]["amount_minor"]) * 2),
            },
        }
        for t in event["tiers"]
    ]
    raised = patch(edge, organizer, event["event_id"], "tiers", {"tiers": tiers})
    assert raised.status == 200, raised.body
    assert [t["price"]["amount_minor"] for t in raised.body["tiers"]] == ["10000", "30000"]
    assert [t["sold"] for t in raised.body["tiers"]] == [0, 1]
    after = book(edge, buyer, event["event_id"], ["vip-1-2"])
    assert after.status == 200 and after.body["total"]["amount_minor"] == "30000"
    booked = edge.get(f"/v1/bookings/{before.body['booking_id']}", token=buyer)
    assert booked.body["total"]["amount_minor"] == "15000"


def test_a_published_seat_map_keeps_its_shape_and_a_draft_may_change_it(
    edge: Edge, organizer: str
) -> None:
    event = create(edge, organizer)
    bigger = [{**t, "rows": t["rows"] + 1} for t in event["tiers"]]
    refused = patch(edge, organizer, event["event_id"], "tiers", {"tiers": bigger})
    assert_error(refused, 400)
    assert set(refused.violations) == {"event.tiers"}

    draft = create(edge, organizer, state="EVENT_STATE_DRAFT")
    vvip = [
        {
            "tier": "TIER_VVIP",
            "price": {"currency_code": "USD", "amount_minor": "90000"},
            "rows": 1,
            "seats_per_row": 4,
        }
    ]
    changed = patch(edge, organizer, draft["event_id"], "tiers", {"tiers": vvip})
    assert changed.status == 200, changed.body
    assert [(t["tier"], t["capacity"]) for t in changed.body["tiers"]] == [("TIER_VVIP", 4)]
    seats = edge.get(f"/v1/events/{draft['event_id']}/seats", token=organizer)
    assert [s["seat_id"] for s in seats.body["seats"]] == [f"vvip-1-{n}" for n in range(1, 5)]


def test_racing_edits_with_one_etag_let_one_through(edge: Edge, organizer: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    event = create(edge, organizer)
    with ThreadPoolExecutor(6) as pool:
        replies = list(
            pool.map(
                lambda i: patch(
                    edge,
                    organizer,
                    event["event_id"],
                    "title",
                    {"title": f"Edit {i}", "etag": event["etag"]},
                ),
                range(6),
            )
        )
    assert sorted(r.status for r in replies) == [200] + [409] * 5
    winner = next(r for r in replies if r.status == 200).body
    assert edge.get(f"/v1/events/{event['event_id']}").body["title"] == winner["title"]


def listed_ids(edge: Edge, query: str, token: str | None = None) -> list[str]:
    """Every event a search finds, following its pages."""
    found: list[str] = []
    token_part = ""
    while True:
        reply = edge.get(f"/v1/events?page_size=2&{query}{token_part}", token=token)
        assert reply.status == 200, reply.body
        found += [e["event_id"] for e in reply.body.get("events", [])]
        next_token = reply.body.get("next_page_token")
        if not next_token:
            return found
        token_part = f"&page_token={next_token}"


def test_search_filters_by_organizer_time_state_and_text(
    edge: Edge, keys_dir: Path, admin: str
) -> None:
    organizer_id = str(uuid.uuid4())
    mine = mint_token(keys_dir, role="organizer", user_id=organizer_id)
    tag = uuid.uuid4().hex[:8]
    made = {
        name: create(
            edge,
            mine,
            title=title,
            venue=venue,
            starts_at=rfc3339(datetime.now(UTC) + timedelta(days=days)),
            **({"state": "EVENT_STATE_DRAFT"} if name == "draft" else {}),
        )["event_id"]
        for name, title, venue, days in [
            ("soon", f"Jazz {tag} Night", "Blue Room", 2),
            ("later", f"Rock {tag}", "Arena jazz_club", 20),
            ("latest", f"Folk {tag}", "Barn", 40),
            ("draft", f"Jazz {tag} rehearsal", "Blue Room", 10),
        ]
    }
    other = create(edge, mint_token(keys_dir, role="organizer"), title=f"Jazz {tag} elsewhere")

    by_organizer = listed_ids(edge, f"organizer_id={organizer_id}")
    assert by_organizer == [made["soon"], made["later"], made["latest"]]  # by start, no draft
    assert listed_ids(edge, f"organizer_id={organizer_id}", token=mine) == [
        made["soon"],
        made["draft"],
        made["later"],
        made["latest"],
    ]
    # Title or venue, ignoring case; '_' and '%' are themselves, not wildcards.
    assert listed_ids(edge, f"query=JAZZ%20{tag}") == [made["soon"], other["event_id"]]
    assert listed_ids(edge, f"organizer_id={organizer_id}&query=jazz") == [
        made["soon"],
        made["later"],
    ]
    assert listed_ids(edge, f"organizer_id={organizer_id}&query=jazz_club") == [made["later"]]
    assert listed_ids(edge, f"organizer_id={organizer_id}&query=z_c%25") == []
    now = datetime.now(UTC)
    window = (
        f"organizer_id={organizer_id}&starts_after={rfc3339(now + timedelta(days=5))}"
        f"&starts_before={rfc3339(now + timedelta(days=30))}"
    )
    assert listed_ids(edge, window) == [made["later"]]
    assert listed_ids(edge, window, token=mine) == [made["draft"], made["later"]]
    drafts = f"organizer_id={organizer_id}&state=EVENT_STATE_DRAFT"
    assert listed_ids(edge, drafts) == [] and listed_ids(edge, drafts, token=mine) == [
        made["draft"]
    ]
    assert made["draft"] in listed_ids(edge, f"state=EVENT_STATE_DRAFT&query={tag}", token=admin)
    published = f"organizer_id={organizer_id}&state=EVENT_STATE_PUBLISHED"
    assert listed_ids(edge, published, token=mine) == by_organizer


def test_bad_searches_are_400(edge: Edge) -> None:
    now = datetime.now(UTC)
    for query, field in [
        ("organizer_id=nobody", "organizer_id"),
        ("query=" + "x" * 101, "query"),
        (
            f"starts_after={rfc3339(now + timedelta(days=2))}"
            f"&starts_before={rfc3339(now + timedelta(days=1))}",
            "starts_before",
        ),
    ]:
        reply = edge.get(f"/v1/events?{query}")
        assert_error(reply, 400)
        assert set(reply.violations) == {field}, query
    assert_error(edge.get("/v1/events?state=EVENT_STATE_GONE"), 400)
    assert_error(edge.get("/v1/events?starts_after=yesterday"), 400)


def test_the_ticket_limit_is_edited_for_later_holds_and_bookings(
    edge: Edge, organizer: str, keys_dir: Path
) -> None:
    event = create(edge, organizer, max_tickets_per_user=4)
    event_id = event["event_id"]
    buyer, other = mint_token(keys_dir), mint_token(keys_dir)

    def hold(token: str, *seats: str) -> Reply:
        return edge.post(f"/v1/events/{event_id}/holds", {"seat_ids": list(seats)}, token=token)

    def refused(reply: Reply) -> bool:
        return (reply.status, reply.reason) == (400, "TICKET_LIMIT_EXCEEDED")

    held = hold(buyer, "standard-1-1", "standard-1-2", "standard-1-3")
    assert held.status == 200, held.body

    lowered = patch(
        edge,
        organizer,
        event_id,
        "max_tickets_per_user",
        {"max_tickets_per_user": 2, "etag": event["etag"]},
    )
    assert lowered.status == 200, lowered.body
    assert lowered.body["max_tickets_per_user"] == 2
    assert edge.get(f"/v1/events/{event_id}").body["max_tickets_per_user"] == 2
    # What the buyer holds stays theirs; nothing more, held or booked.
    assert edge.get(f"/v1/holds/{held.body['hold_id']}", token=buyer).status == 200
    assert refused(hold(buyer, "standard-2-1"))
    assert refused(book(edge, buyer, event_id, ["standard-2-1"]))
    assert hold(other, "standard-3-1", "standard-3-2").status == 200
    assert refused(hold(other, "standard-3-3"))

    raised = patch(edge, organizer, event_id, "max_tickets_per_user", {"max_tickets_per_user": 6})
    assert raised.status == 200 and raised.body["max_tickets_per_user"] == 6, raised.body
    assert book(edge, buyer, event_id, ["standard-2-1", "standard-2-2"]).status == 200
    assert hold(buyer, "standard-2-3").status == 200
    assert refused(hold(buyer, "standard-2-4"))  # 3 held, 2 bought, 1 held: 6

    # Named but not given: no limit any more.
    cleared = patch(edge, organizer, event_id, "max_tickets_per_user", {})
    assert cleared.status == 200, cleared.body
    assert cleared.body.get("max_tickets_per_user", 0) == 0
    assert hold(buyer, "standard-2-4", "standard-2-5").status == 200

    for bad in (-1, 100_001):
        wrong = patch(
            edge, organizer, event_id, "max_tickets_per_user", {"max_tickets_per_user": bad}
        )
        assert_error(wrong, 400)
        assert set(wrong.violations) == {"event.max_tickets_per_user"}, wrong.body
    assert edge.get(f"/v1/events/{event_id}").body.get("max_tickets_per_user", 0) == 0
