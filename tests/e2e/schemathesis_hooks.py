"""Schemathesis hooks for the fuzzing run in test_openapi.py.

/openapi.json states every rule one field can carry, so a request it calls
valid passes those checks. A few rules span fields, depend on the clock or on
data, and the document can only say them in words (its descriptions do);
these hooks make the requests the fuzzer means to be valid keep them, so that
"schema-valid request rejected" keeps its meaning for everything else. Each
fix names its rule. Requests meant to be invalid are left as generated.

Three kinds of finding are dropped (filter_failure), each for a reason below.
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema_rs
import schemathesis

from auth.domain import common_passwords
from event.domain import MAX_EVENT_HORIZON
from payment.domain import luhn_valid
from ticketing.event.v1 import event_pb2

# The server takes up to 100,000 seats an event (the scale benchmark makes one);
# the fuzzer's events stay small so that the run takes seconds and a few MB.
FUZZ_EVENT_SEATS = 1_000
FAILED_PRECONDITION = 9  # google.rpc.Code
# Refusals of values only the server can make, whatever their shape.
SERVER_MADE = frozenset({"TICKET_INVALID"})
# A seat id of the right shape that is not on the event's map: which are depends
# on the event (its tiers and their rows), which no schema knows.
NOT_ON_THE_MAP = ("the event has no", "is outside the")
# Accounts the rest of the suite relies on: never re-roled by the fuzzer (its
# stateful phase feeds ids from ListUsers into SetUserRole).
PROTECTED_USERS = frozenset(filter(None, os.environ.get("FUZZ_PROTECTED_USERS", "").split(",")))


# Routes that set a new password, held to the registration's rules.
NEW_PASSWORDS = frozenset({"POST /v1/auth/password:set", "POST /v1/users/me:changePassword"})
# Routes that email a code, limited per address.
CODE_SENDS = frozenset({"POST /v1/auth/verifyEmail:resend", "POST /v1/auth/password:reset"})


def meant_valid(case: Any) -> bool:
    return case.meta is not None and case.meta.generation.mode.is_positive


def tier_name(tier: str | int) -> str:
    """An enum is written by name or by number."""
    return tier if isinstance(tier, str) else event_pb2.Tier.Name(tier)


def create_event(event: dict[str, Any]) -> None:
    """starts_at in the future and within the horizon; a sale window inside
    [now, starts_at]; a new event a draft or published; each tier once, one
    currency, and (see FUZZ_EVENT_SEATS) few seats in all."""
    ahead = timedelta(seconds=random.uniform(60, MAX_EVENT_HORIZON.total_seconds() - 86_400))
    event["starts_at"] = (datetime.now(UTC) + ahead).strftime("%Y-%m-%dT%H:%M:%SZ")
    # The window, if any, is the first half of the time until the start.
    if "sale_start_time" in event:
        event["sale_start_time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if "sale_end_time" in event:
        end = datetime.now(UTC) + ahead / 2
        event["sale_end_time"] = end.strftime("%Y-%m-%dT%H:%M:%SZ")
    if event.get("state") in ("EVENT_STATE_CANCELLED", event_pb2.EVENT_STATE_CANCELLED):
        event["state"] = "EVENT_STATE_DRAFT"
    fix_tiers(event)


def update_event(event: dict[str, Any], query: dict[str, Any]) -> None:
    """What create_event asks of the fields the mask names; a required field the
    mask names is given (an update to nothing clears it, which it cannot be),
    and a sale window is cleared (its bounds must fit the stored event's)."""
    mask = [p for p in str(query.get("update_mask", "")).split(",") if p]
    for required in ("title", "venue", "starts_at", "tiers"):
        if required in mask and event.get(required) is None:
            mask = [path for path in mask if path != required]  # every time it is named
    for bound in ("sale_start_time", "sale_end_time"):
        event.pop(bound, None)
    query["update_mask"] = ",".join(mask or ["description"])
    if event.get("starts_at") is not None:
        ahead = timedelta(seconds=random.uniform(60, MAX_EVENT_HORIZON.total_seconds() - 86_400))
        event["starts_at"] = (datetime.now(UTC) + ahead).strftime("%Y-%m-%dT%H:%M:%SZ")
    if event.get("tiers") is not None:
        fix_tiers(event)


def fix_tiers(event: dict[str, Any]) -> None:
    tiers = list({tier_name(tier["tier"]): tier for tier in event["tiers"]}.values())
    share = FUZZ_EVENT_SEATS // len(tiers)
    for tier in tiers:
        tier["price"]["currency_code"] = tiers[0]["price"]["currency_code"]
        tier["seats_per_row"] = min(tier["seats_per_row"], share)
        tier["rows"] = min(tier["rows"], share // tier["seats_per_row"])
    event["tiers"] = tiers


def register(account: dict[str, Any], field: str = "password") -> None:
    """Not one of the 10,000 most common passwords."""
    password = account.get(field)
    if isinstance(password, str) and password.strip().lower() in common_passwords():
        account[field] = password[:240] + "-uncommon"


def book(booking: dict[str, Any]) -> None:
    """A card number that passes the Luhn check, and a card not yet expired."""
    card = booking.get("payment_method")
    if not isinstance(card, dict) or "card_number" not in card:
        return
    digits = card["card_number"].replace(" ", "")
    card["card_number"] = next(
        digits[:-1] + last for last in "0123456789" if luhn_valid(digits[:-1] + last)
    )
    today = datetime.now(UTC)
    if (card.get("exp_year", 0), card.get("exp_month", 1)) < (today.year, today.month):
        card["exp_year"] = today.year + 1


def one_of(body: dict[str, Any], named: str, other: str) -> None:
    """Seats named, or the other way to say them (a hold, best-available), not
    both: the second goes when both are there. With neither, a named seat."""
    if body.get(named) and body.get(other):
        del body[other]
    elif not body.get(named) and not body.get(other):
        body[named] = ["standard-1-1"]


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    label = case.operation.label
    protected = case.path_parameters and case.path_parameters.get("user_id") in PROTECTED_USERS
    if label == "POST /v1/users/{user_id}:setRole" and protected:
        case.path_parameters["user_id"] = str(uuid.uuid4())
    if not meant_valid(case):
        return case
    if label == "POST /v1/events" and isinstance(case.body, dict):
        create_event(case.body)
    elif label == "POST /v1/auth/register" and isinstance(case.body, dict):
        register(case.body)
    elif label == "POST /v1/bookings" and isinstance(case.body, dict):
        book(case.body)
    elif label == "PATCH /v1/events/{event_id}" and isinstance(case.body, dict):
        case.query = dict(case.query or {})
        update_event(case.body, case.query)
    elif label in NEW_PASSWORDS and isinstance(case.body, dict):
        register(case.body, "new_password")
    elif label in CODE_SENDS and isinstance(case.body, dict) and "email" in case.body:
        # Codes are sent to an address at most once a second (CODE_RESEND_INTERVAL_SECONDS
        # in the test mesh) and five times an hour: a valid request gets an address
        # of its own, as a TOO_MANY_CODES for a reused one is the limit working.
        case.body["email"] = f"fuzz-{uuid.uuid4().hex[:12]}@example.com"
    if label == "GET /v1/events" and case.query and "starts_before" in case.query:
        # A time range ends after it starts.
        case.query.pop("starts_after", None)
    if label == "POST /v1/bookings" and isinstance(case.body, dict):
        one_of(case.body, "seat_ids", "hold_id")
        if case.body.get("seat_ids") and not case.body.get("event_id"):
            case.body["event_id"] = str(uuid.uuid4())  # seats are an event's
    if label == "POST /v1/events/{event_id}/holds":
        if not isinstance(case.body, dict):  # no field is required, so no body is sent
            case.body = {}
        one_of(case.body, "seat_ids", "best_available")
    if case.query and "page_token" in case.query:
        # A page token is an opaque cursor only the server makes.
        del case.query["page_token"]
    return case


def null_in_a_list(value: Any) -> bool:
    if isinstance(value, list):
        return any(item is None or null_in_a_list(item) for item in value)
    if isinstance(value, dict):
        return any(null_in_a_list(item) for item in value.values())
    return False


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """False drops a failure.

    - A well-formed request refused with FAILED_PRECONDITION (HTTP 400): the
      resource's state forbids it (cancelling a booking cancelled already, a
      declined card). No schema describes state; the check's own list of
      acceptable answers has 409 for the same reason.
    - Seat ids of the right shape refused as not on the event's seat map (a
      hold on an event the stateful phase created): the map is data.
    - A ticket token refused as TICKET_INVALID: like a page token, a ticket
      token is only the server's to make (signed), which no schema can say.
    - A list with null items accepted: the transcoder (protobuf's JSON parser)
      drops them, so the request is the one without them.
    - QUERY without a content type answered 400: Envoy refuses such a request
      as malformed before any route (its detail: query_missing_content_type).
      With a content type it gets the 405 and Allow every other method gets
      (test_openapi.py::test_undeclared_methods_are_405_with_allow).
    - An update accepted although a field of its body is invalid, when that
      field is one its mask does not name: the server does not read it.
    """
    if failure.code == "ST202" and response.status_code == 400:
        try:
            status = json.loads(response.content)
        except ValueError:
            return True
        details = [d for d in status.get("details", []) if isinstance(d, dict)]
        reasons = {d.get("reason") for d in details}
        violations = [v for d in details for v in d.get("field_violations", [])]
        off_the_map = bool(violations) and all(
            any(words in v.get("description", "") for words in NOT_ON_THE_MAP) for v in violations
        )
        return (
            status.get("code") != FAILED_PRECONDITION
            and not reasons & SERVER_MADE
            and not off_the_map
        )
    if failure.code == "ST201" and null_in_a_list(case.body):
        return False
    if failure.code == "ST204" and case.method.upper() == "QUERY":
        return response.status_code != 400
    if failure.code == "ST201" and case.operation.label == "PATCH /v1/events/{event_id}":
        return not only_unread_fields_invalid(case)
    return True


@functools.cache
def _patch_event_schema() -> dict[str, Any]:
    document = json.loads((Path(__file__).parents[2] / "gen" / "openapi.json").read_text())
    body = document["paths"]["/v1/events/{event_id}"]["patch"]["requestBody"]
    return {"components": document["components"], **body["content"]["application/json"]["schema"]}


def only_unread_fields_invalid(case: Any) -> bool:
    """An update reads the fields its mask names (and the etag) only (AIP-134):
    an invalid value elsewhere in the body is not read, so not refused."""
    mask = str((case.query or {}).get("update_mask", ""))
    if not isinstance(case.body, dict) or not re.fullmatch(r"[a-z_]+(,[a-z_]+)*", mask):
        return False
    schema = _patch_event_schema()
    read = {k: v for k, v in case.body.items() if k in {*mask.split(","), "etag"}}
    return jsonschema_rs.Draft202012Validator(schema, validate_formats=True).is_valid(read)
