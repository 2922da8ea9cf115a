"""Seat ids, tiers and event rules, without servers."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from event.domain import (
    UPDATABLE_FIELDS,
    EventInfo,
    EventState,
    SeatRef,
    Tier,
    TierPlan,
    check_new_event,
    check_on_sale,
    check_seat_request,
    check_tier_change,
    check_update_mask,
    parse_seat_id,
)
from runtime.errors import Invalid, ServiceError

NOW = datetime(2026, 1, 1, tzinfo=UTC)
EVENT = EventInfo(
    uuid.uuid4(),
    "Show",
    "",
    "Hall",
    NOW + timedelta(days=30),
    uuid.uuid4(),
    NOW,
    (TierPlan(Tier.STANDARD, 5000, "USD", 10, 20), TierPlan(Tier.VIP, 15000, "USD", 2, 5)),
)


@pytest.mark.parametrize(
    ("raw", "seat"),
    [
        ("standard-3-10", SeatRef(Tier.STANDARD, 3, 10)),
        ("VIP-1-4", SeatRef(Tier.VIP, 1, 4)),
        ("normal-2-1", SeatRef(Tier.STANDARD, 2, 1)),
        (" Normal-2-1 ", SeatRef(Tier.STANDARD, 2, 1)),
        ("vvip-2-1", SeatRef(Tier.VVIP, 2, 1)),
    ],
)
def test_seat_ids_parse(raw: str, seat: SeatRef) -> None:
    assert parse_seat_id(raw) == seat


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "vip",
        "vip-1",
        "vip-1-",
        "vip-0-1",
        "vip-1-0",
        "vip-01-1",
        "gold-1-1",
        "vip-1-1-1",
        "vip_1_1",
        "vip--1-1",
        "vip-a-1",
    ],
)
def test_malformed_seat_ids_do_not_parse(raw: str) -> None:
    assert parse_seat_id(raw) is None


def test_seat_id_is_canonical_lowercase() -> None:
    assert SeatRef(Tier.VVIP, 2, 1).seat_id == "vvip-2-1"
    assert parse_seat_id("NORMAL-1-1").seat_id == "standard-1-1"  # type: ignore[union-attr]


def test_seats_sort_in_seat_map_order() -> None:
    seats = [SeatRef(Tier.VIP, 1, 1), SeatRef(Tier.STANDARD, 2, 1), SeatRef(Tier.STANDARD, 1, 2)]
    assert [s.seat_id for s in sorted(seats)] == ["standard-1-2", "standard-2-1", "vip-1-1"]


def violations(call: object, *args: object) -> dict[str, str]:
    with pytest.raises(ServiceError) as caught:
        call(*args)  # type: ignore[operator]
    assert isinstance(caught.value, Invalid)
    return {v.field: v.description for v in caught.value.violations}


def test_a_seat_request_may_mix_tiers() -> None:
    seats = check_seat_request(["vip-2-5", "standard-10-20", "Normal-1-1"], EVENT)
    assert [s.tier for s in seats] == [Tier.VIP, Tier.STANDARD, Tier.STANDARD]


def test_each_bad_seat_is_named() -> None:
    found = violations(
        check_seat_request,
        ["vip-1-1", "vip-3-1", "standard-1-21", "vvip-1-1", "xx", "VIP-1-1"],
        EVENT,
    )
    assert set(found) == {"seat_ids[1]", "seat_ids[2]", "seat_ids[3]", "seat_ids[4]", "seat_ids[5]"}
    assert "outside the vip tier (2 rows of 5)" in found["seat_ids[1]"]
    assert "no vvip tier" in found["seat_ids[3]"]
    assert "twice" in found["seat_ids[5]"]


def test_between_one_and_ten_seats() -> None:
    assert "seat_ids" in violations(check_seat_request, [], EVENT)
    eleven = [f"standard-1-{n}" for n in range(1, 12)]
    assert violations(check_seat_request, eleven, EVENT)["seat_ids"] == "at most 10 seats at a time"
    assert len(check_seat_request(eleven[:10], EVENT)) == 10


def test_a_valid_event_passes() -> None:
    check_new_event("Show", "Hall", NOW + timedelta(days=1), "", EVENT.tiers, NOW)


def test_every_event_problem_is_named() -> None:
    tiers = [TierPlan(Tier.VIP, -1, "usd", 0, 2000), TierPlan(Tier.VIP, 100, "EUR", 1, 1)]
    found = violations(check_new_event, " ", "", NOW - timedelta(seconds=1), "", tiers, NOW)
    assert found == {
        "event.title": "is required",
        "event.venue": "is required",
        "event.starts_at": "must be in the future",
        "event.tiers[0].price.currency_code": (
            "must be an active ISO-4217 currency code, like USD or EUR"
        ),
        "event.tiers[0].price.amount_minor": "must be between 1 and 1000000000000",
        "event.tiers[0].rows": "must be between 1 and 1000",
        "event.tiers[0].seats_per_row": "must be between 1 and 1000",
        "event.tiers[1].tier": "VIP appears more than once",
        "event.tiers[1].price.currency_code": "all tiers must share one currency",
    }


def test_capacity_is_capped_at_one_hundred_thousand() -> None:
    at_cap = [TierPlan(Tier.STANDARD, 100, "USD", 100, 1000)]
    check_new_event("Big", "Stadium", NOW + timedelta(days=1), "", at_cap, NOW)
    over = [*at_cap, TierPlan(Tier.VIP, 100, "USD", 1, 1)]
    assert "event.tiers" in violations(
        check_new_event, "Big", "Stadium", NOW + timedelta(days=1), "", over, NOW
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"price_minor": 0}, "event.tiers[0].price.amount_minor"),
        ({"price_minor": 2**63 - 1}, "event.tiers[0].price.amount_minor"),
        ({"currency": "ZZZ"}, "event.tiers[0].price.currency_code"),
        ({"currency": "XAU"}, "event.tiers[0].price.currency_code"),
    ],
)
def test_prices_are_real_amounts_in_real_currencies(change, field) -> None:
    tier = dataclasses.replace(EVENT.tiers[0], **change)
    found = violations(check_new_event, "Show", "Hall", NOW + timedelta(days=1), "", [tier], NOW)
    assert field in found


def test_the_start_is_within_five_years() -> None:
    def check(starts_at: datetime) -> dict[str, str]:
        return violations(check_new_event, "Show", "Hall", starts_at, "", EVENT.tiers, NOW)

    assert "event.starts_at" in check(datetime(9999, 12, 31, tzinfo=UTC))
    assert "event.starts_at" in check(NOW + timedelta(days=5 * 366 + 1))
    check_new_event("Show", "Hall", NOW + timedelta(days=4 * 365), "", EVENT.tiers, NOW)


def test_a_long_venue_or_seat_id_is_refused_without_being_echoed() -> None:
    found = violations(
        check_new_event, "Show", "v" * 201, NOW + timedelta(days=1), "", EVENT.tiers, NOW
    )
    assert found["event.venue"] == "must be at most 200 characters"
    found = violations(check_seat_request, ["vip-1-1" * 9000, "x" * 30], EVENT)
    assert found["seat_ids[0]"] == "must be at most 32 characters"
    assert len(found["seat_ids[1]"]) < 100


def _reason(call: object, *args: object) -> str:
    with pytest.raises(ServiceError) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value.reason


def test_an_event_is_on_sale_only_published_within_its_window_and_before_it_starts() -> None:
    check_on_sale(EVENT, NOW)
    draft = dataclasses.replace(EVENT, state=EventState.DRAFT)
    cancelled = dataclasses.replace(EVENT, state=EventState.CANCELLED)
    window = dataclasses.replace(
        EVENT, sale_start_time=NOW + timedelta(days=1), sale_end_time=NOW + timedelta(days=2)
    )
    assert _reason(check_on_sale, draft, NOW) == "EVENT_NOT_PUBLISHED"
    assert _reason(check_on_sale, cancelled, NOW) == "EVENT_CANCELLED"
    assert _reason(check_on_sale, window, NOW) == "SALE_NOT_OPEN"
    check_on_sale(window, NOW + timedelta(days=1))
    assert _reason(check_on_sale, window, NOW + timedelta(days=2)) == "SALE_ENDED"
    assert _reason(check_on_sale, EVENT, EVENT.starts_at) == "EVENT_STARTED"


def test_a_sale_window_fits_before_the_start() -> None:
    tiers = list(EVENT.tiers)
    starts = NOW + timedelta(days=30)
    for start, end, field in [
        (NOW + timedelta(days=2), NOW + timedelta(days=1), "event.sale_end_time"),
        (starts, None, "event.sale_start_time"),
        (None, starts + timedelta(seconds=1), "event.sale_end_time"),
    ]:
        with pytest.raises(Invalid) as caught:
            check_new_event("Show", "Hall", starts, "", tiers, NOW, start, end)
        assert [v.field for v in caught.value.violations] == [field]
    check_new_event("Show", "Hall", starts, "", tiers, NOW, None, starts)


def test_an_update_mask_names_updatable_fields_only() -> None:
    assert check_update_mask(["title", "tiers", "title"]) == ["title", "tiers"]
    for mask in ([], ["organizer_id"], ["title", "state"], ["etag"]):
        with pytest.raises(Invalid) as caught:
            check_update_mask(mask)
        assert {v.field for v in caught.value.violations} == {"update_mask"}
    # The same list the proto's pattern for update_mask (and so the OpenAPI document) states.
    assert UPDATABLE_FIELDS == (
        "title",
        "description",
        "venue",
        "starts_at",
        "sale_start_time",
        "sale_end_time",
        "tiers",
        "max_tickets_per_user",
    )


def test_a_published_seat_map_keeps_its_shape_but_not_its_prices() -> None:
    repriced = [dataclasses.replace(p, price_minor=p.price_minor * 2) for p in EVENT.tiers]
    check_tier_change(EVENT, repriced)
    bigger = [dataclasses.replace(p, rows=p.rows + 1) for p in EVENT.tiers]
    assert _reason(check_tier_change, EVENT, bigger) == "SEAT_MAP_FIXED"
    other_currency = [dataclasses.replace(p, currency="EUR") for p in EVENT.tiers]
    assert _reason(check_tier_change, EVENT, other_currency) == "SEAT_MAP_FIXED"
    check_tier_change(dataclasses.replace(EVENT, state=EventState.DRAFT), bigger)


def test_drafts_are_visible_to_their_organizer_and_admins() -> None:
    draft = dataclasses.replace(EVENT, state=EventState.DRAFT)
    assert draft.visible_to(str(draft.organizer_id), False)
    assert draft.visible_to(str(uuid.uuid4()), True)
    assert not draft.visible_to(str(uuid.uuid4()), False) and not draft.visible_to(None, False)
    assert EVENT.visible_to(None, False)
    assert dataclasses.replace(EVENT, version=7).etag == '"7"'
