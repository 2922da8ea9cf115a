"""The OpenAPI document states what the servers check: the limits it declares
are the ones the domain code reads, and its patterns accept exactly what the
Python checks accept."""

from __future__ import annotations

import re
import string
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from auth import domain as auth_domain
from booking import domain as booking_domain
from event import domain as event_domain
from payment import domain as payment_domain
from runtime.errors import ServiceError
from runtime.validation import text_problem
from scripts import openapi
from scripts.mesh import REPO

DOCUMENT = openapi.document(REPO / "gen" / "descriptors.binpb")
SCHEMAS = DOCUMENT["components"]["schemas"]


def values_of(pattern: str) -> st.SearchStrategy[str]:
    """What a pattern matches as JSON Schema reads it: ECMAScript's `$` ends
    the string, where Python's also allows a final newline."""
    return st.from_regex(re.compile(pattern.removesuffix("$") + r"\Z"), fullmatch=True)


def request_body(path: str, verb: str = "post") -> dict:
    return DOCUMENT["paths"][path][verb]["requestBody"]["content"]["application/json"]["schema"]


def test_the_document_declares_the_limits_the_services_enforce() -> None:
    event = SCHEMAS["ticketing.event.v1.EventInput"]["properties"]
    assert event["title"]["maxLength"] == event_domain.MAX_TITLE_LENGTH
    assert event["description"]["maxLength"] == event_domain.MAX_DESCRIPTION_LENGTH
    tier = SCHEMAS["ticketing.event.v1.EventTierInput"]["properties"]
    assert (tier["rows"]["minimum"], tier["rows"]["maximum"]) == (1, event_domain.MAX_ROWS)
    assert re.fullmatch(tier["price"]["properties"]["amount_minor"]["pattern"], "1000000000000")
    assert not re.fullmatch(tier["price"]["properties"]["amount_minor"]["pattern"], "1000000000001")
    assert tier["tier"]["enum"] == ["TIER_STANDARD", "TIER_VIP", "TIER_VVIP", 1, 2, 3]
    booking = request_body("/v1/bookings")
    seats = booking["properties"]["seat_ids"]
    # Optional since a hold_id may say which seats instead (then none are named).
    assert (seats.get("minItems"), seats["maxItems"]) == (None, booking_domain.MAX_SEATS)
    assert seats["items"]["maxLength"] == booking_domain.MAX_SEAT_ID_LENGTH
    assert booking["properties"]["event_id"]["format"] == "uuid"
    register = request_body("/v1/auth/register")["properties"]
    assert register["password"]["minLength"] == auth_domain.MIN_PASSWORD_LENGTH
    assert register["email"]["maxLength"] == auth_domain.MAX_EMAIL_LENGTH


def test_responses_are_exact_and_requests_take_extra_fields() -> None:
    assert SCHEMAS["ticketing.event.v1.Event"]["additionalProperties"] is False
    assert "event_id" not in SCHEMAS["ticketing.event.v1.EventInput"]["properties"]
    assert request_body("/v1/bookings")["propertyNames"] == {"minLength": 1}


def test_each_operation_declares_its_error_statuses() -> None:
    def statuses(path: str, verb: str) -> set[str]:
        return set(DOCUMENT["paths"][path][verb]["responses"]) - {"200"}

    assert statuses("/v1/events", "get") == {"400", "429", "503", "504"}
    assert statuses("/v1/events/{event_id}", "get") == {"400", "404", "429", "503", "504"}
    assert statuses("/v1/bookings", "post") == {
        *("400", "401", "403", "404", "409", "413", "429", "503", "504")
    }
    assert statuses("/v1/auth/login", "post") >= {"401", "413"}
    # A cancel's path names the booking; its body may be left out.
    assert DOCUMENT["paths"]["/v1/bookings/{booking_id}:cancel"]["post"]["requestBody"] == {
        "required": False,
        "content": {
            "application/json": {"schema": request_body("/v1/bookings/{booking_id}:cancel")}
        },
    }


@given(st.text())
def test_the_text_patterns_accept_what_the_text_checks_accept(text: str) -> None:
    assert bool(re.fullmatch(openapi.TEXT, text)) == (text_problem(text[:100]) is None)
    blank_ok = text_problem(text[:100]) is None and text.strip() != ""
    assert bool(re.fullmatch(openapi.NOT_BLANK, text)) == blank_ok


@given(values_of(request_body("/v1/bookings")["properties"]["seat_ids"]["items"]["pattern"]))
def test_every_seat_id_the_document_allows_parses(seat_id: str) -> None:
    assert event_domain.parse_seat_id(seat_id) is not None


@given(st.text(alphabet=string.ascii_letters + string.digits + "-", max_size=24))
def test_every_seat_id_that_parses_as_written_is_allowed(seat_id: str) -> None:
    pattern = request_body("/v1/bookings")["properties"]["seat_ids"]["items"]["pattern"]
    assert bool(re.fullmatch(pattern, seat_id)) == (event_domain.parse_seat_id(seat_id) is not None)


@given(
    values_of(
        SCHEMAS["ticketing.payment.v1.PaymentMethodInput"]["properties"]["card_number"]["pattern"]
    )
)
def test_a_card_number_the_document_allows_is_refused_for_its_checksum_at_most(number: str) -> None:
    card = payment_domain.CardDetails(number, 12, datetime.now(UTC).year + 1, "123")
    order = payment_domain.ChargeOrder(
        "key", "7b2f9f0e-7a4b-4b43-9c55-2a4f7c7c8a11", payment_domain.Amount(1, "USD"), card, ""
    )
    try:
        payment_domain.check_charge(order, datetime.now(UTC).date())
    except ServiceError as refused:
        assert [v.description for v in refused.violations] == ["is not a valid card number"]


@given(
    st.datetimes(
        min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
    )
)
def test_the_timestamp_pattern_takes_what_protobuf_prints(moment: datetime) -> None:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    assert re.fullmatch(openapi.RFC3339, stamp.ToJsonString())


def test_digits_between_matches_exactly_the_range() -> None:
    pattern = openapi.digits_between(1, 1000)
    assert [n for n in range(0, 1100) if re.fullmatch(pattern, str(n))] == list(range(1, 1001))
    assert not re.fullmatch(pattern, "01")
