"""What no request may carry, and page tokens from anywhere, without servers."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from runtime import pagination, validation
from runtime.errors import Invalid, ServiceError
from ticketing.auth.v1 import auth_pb2
from ticketing.booking.v1 import booking_pb2
from ticketing.event.v1 import event_pb2


def refusal(request: object, metadata: tuple = ()) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        validation.check_request(request, metadata)
    assert isinstance(caught.value, Invalid)
    return caught.value


def fields(error: ServiceError) -> dict[str, str]:
    return {v.field: v.description for v in error.violations}


def test_nul_and_control_characters_are_named_in_nested_and_repeated_fields() -> None:
    request = booking_pb2.CreateBookingRequest(
        event_id=str(uuid.uuid4()),
        seat_ids=["vip-1-1", "vip-1-2\x00"],
        request_id="abc\x1b[31m",
    )
    request.payment_method.card_number = "4242\x07"
    assert fields(refusal(request)) == {
        "seat_ids[1]": "must not contain NUL characters",
        "request_id": "must not contain control characters",
        "payment_method.card_number": "must not contain control characters",
    }


def test_line_breaks_only_in_free_text() -> None:
    event = event_pb2.Event(title="Show", description="Doors at 7.\nBar open.\t")
    validation.check_request(event_pb2.CreateEventRequest(event=event), ())
    event.title = "Show\nnight"
    assert list(fields(refusal(event_pb2.CreateEventRequest(event=event)))) == ["event.title"]


def test_no_field_is_longer_than_any_rule_reads() -> None:
    request = auth_pb2.LoginRequest(email="a@b.co", password="p" * 10_001)
    assert fields(refusal(request)) == {"password": "must be at most 10000 characters"}


@pytest.mark.parametrize(
    "path",
    [
        "/v1/auth/login?password=hunter2hunter2",
        "/v1/auth/login?email=a%40b.co&pass%77ord=x",
        "/v1/bookings?payment_method.card_number=4242424242424242",
        "/v1/bookings?paymentMethod.cvc=123",
        "/v1/users/me:changePassword?newPassword=x",
    ],
)
def test_secrets_in_the_url_are_refused(path: str) -> None:
    error = refusal(auth_pb2.LoginRequest(), ((validation.ORIGINAL_PATH_HEADER, path),))
    assert error.reason == "SECRET_IN_URL"
    assert "never in the URL" in next(iter(fields(error).values()))


def test_other_query_parameters_pass() -> None:
    header = ((validation.ORIGINAL_PATH_HEADER, "/v1/events?page_size=5&page_token=abc"),)
    validation.check_request(event_pb2.ListEventsRequest(page_size=5), header)


def test_an_undecodable_request_is_a_bad_request_not_a_crash() -> None:
    parse = validation.tolerant(event_pb2.ListEventsRequest.FromString)
    # Field 2 (page_token) as a string of two bytes that are not UTF-8.
    garbage = parse(b"\x12\x02\xff\xfe")
    assert garbage is validation.UNDECODABLE
    assert list(fields(refusal(garbage))) == ["request"]


def token(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor(**fields_: object) -> str:
    return token(json.dumps(fields_).encode())


@pytest.mark.parametrize(
    "bad",
    [
        "garbage!!",
        "A" * 600,
        token(b"[" * 100_000),
        token(b"\xff\xfe"),
        token(b"[1]"),
        token(b"{}"),
        cursor(t="2020-01-01T00:00:00+00:00", id=5),
        cursor(t=5, id=str(uuid.uuid4())),
        cursor(t="2020-01-01T00:00:00", id=str(uuid.uuid4())),
        cursor(t="yesterday", id=str(uuid.uuid4())),
        cursor(t="2020-01-01T00:00:00+00:00", id="not-a-uuid"),
    ],
)
def test_any_garbage_keyset_token_is_invalid_argument(bad: str) -> None:
    with pytest.raises(ServiceError) as caught:
        pagination.decode_keyset(bad)
    assert [v.field for v in caught.value.violations] == ["page_token"]


@pytest.mark.parametrize("bad", [cursor(after=5), cursor(after=[]), cursor(other="x")])
def test_any_garbage_seat_cursor_is_invalid_argument(bad: str) -> None:
    with pytest.raises(ServiceError) as caught:
        pagination.cursor_text(bad, "after")
    assert [v.field for v in caught.value.violations] == ["page_token"]


def test_real_tokens_round_trip() -> None:
    from datetime import UTC, datetime

    moment, ident = datetime(2030, 1, 1, tzinfo=UTC), uuid.uuid4()
    assert pagination.decode_keyset(pagination.keyset_token(moment, ident)) == (moment, ident)
    assert pagination.cursor_text(pagination.encode_token({"after": "vip-1-1"}), "after") == (
        "vip-1-1"
    )
    assert pagination.decode_keyset("") is None
