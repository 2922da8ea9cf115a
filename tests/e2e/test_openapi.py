"""The OpenAPI document Envoy serves, checked against Envoy itself: every
documented operation, called validly, answers 200 with a body of the
documented schema."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from scripts.mesh import REPO
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.support import Edge, card, event_body, login, register_and_login


@pytest.fixture(scope="module")
def document(edge: Edge) -> dict[str, Any]:
    served = edge.get("/openapi.json")
    assert served.status == 200
    assert served.body == json.loads((REPO / "gen" / "openapi.json").read_text())
    return served.body


def violations(
    value: Any, schema: dict[str, Any], doc: dict[str, Any], where: str = "$"
) -> list[str]:
    """Where `value` departs from `schema` (the subset of JSON Schema the generator emits)."""
    if "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{where}: not an object"]
        known = schema.get("properties", {})
        found = [f"{where}.{key}: not documented" for key in value if key not in known]
        for key, item in value.items():
            if key in known:
                found += violations(item, known[key], doc, f"{where}.{key}")
        return found
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: not an array"]
        return [
            v
            for i, item in enumerate(value)
            for v in violations(item, schema["items"], doc, f"{where}[{i}]")
        ]
    expected = {"string": str, "integer": int, "number": (int, float), "boolean": bool}[kind]
    if not isinstance(value, expected) or (kind == "integer" and isinstance(value, bool)):
        return [f"{where}: {value!r} is not a {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} not in its enum"]
    return []


@pytest.fixture(scope="module")
def world(edge: Edge) -> dict[str, Any]:
    """Real objects for the path parameters, and the tokens to reach them."""
    admin = login(edge, ADMIN_EMAIL, ADMIN_PASSWORD)
    buyer = register_and_login(edge, "openapi")
    event = edge.post("/v1/events", event_body(), token=admin).body
    booking = edge.post(
        "/v1/bookings",
        {
            "event_id": event["event_id"],
            "seat_ids": ["vip-1-1"],
            "payment_method": card(),
            "request_id": str(uuid.uuid4()),
        },
        token=buyer.access_token,
    ).body
    return {"admin": admin, "buyer": buyer, "event": event, "booking": booking}


def calls(world: dict[str, Any]) -> dict[str, tuple[str, str, Any, str | None]]:
    """One valid call per operationId: (method, path, body, token)."""
    buyer, admin = world["buyer"], world["admin"]
    event_id, booking = world["event"]["event_id"], world["booking"]
    fresh_email = f"openapi-{uuid.uuid4().hex[:10]}@example.com"
    return {
        "AuthService_Register": (
            "POST",
            "/v1/auth/register",
            {"email": fresh_email, "password": "long-enough", "display_name": "Doc"},
            None,
        ),
        "AuthService_Login": (
            "POST",
            "/v1/auth/login",
            {"email": buyer.email, "password": buyer.password},
            None,
        ),
        "AuthService_Refresh": (
            "POST",
            "/v1/auth/refresh",
            {"refresh_token": buyer.refresh_token},
            None,
        ),
        "AuthService_Logout": (
            "POST",
            "/v1/auth/logout",
            {"refresh_token": "whatever-it-was"},
            None,
        ),
        "AuthService_GetMe": ("GET", "/v1/users/me", None, buyer.access_token),
        "AuthService_GetJwks": ("GET", "/v1/auth/jwks", None, None),
        "AuthService_ListUsers": ("GET", "/v1/users?page_size=2", None, admin),
        "AuthService_SetUserRole": (
            "POST",
            f"/v1/users/{buyer.user_id}:setRole",
            {"role": "ROLE_USER"},
            admin,
        ),
        "EventService_CreateEvent": ("POST", "/v1/events", event_body(), admin),
        "EventService_GetEvent": ("GET", f"/v1/events/{event_id}", None, None),
        "EventService_ListEvents": ("GET", "/v1/events?page_size=2", None, None),
        "EventService_ListSeats": ("GET", f"/v1/events/{event_id}/seats?tier=TIER_VIP", None, None),
        "EventService_GetSalesReport": ("GET", f"/v1/events/{event_id}/sales", None, admin),
        "BookingService_CreateBooking": (
            "POST",
            "/v1/bookings",
            {
                "event_id": event_id,
                "seat_ids": ["vip-1-2"],
                "payment_method": card(),
                "request_id": str(uuid.uuid4()),
            },
            buyer.access_token,
        ),
        "BookingService_GetBooking": (
            "GET",
            f"/v1/bookings/{booking['booking_id']}",
            None,
            buyer.access_token,
        ),
        "BookingService_ListBookings": ("GET", "/v1/bookings", None, buyer.access_token),
        "BookingService_CancelBooking": (
            "POST",
            f"/v1/bookings/{booking['booking_id']}:cancel",
            {},
            buyer.access_token,
        ),
        "PaymentService_GetPayment": (
            "GET",
            f"/v1/payments/{booking['payment_id']}",
            None,
            buyer.access_token,
        ),
        "NotificationService_ListNotifications": (
            "GET",
            "/v1/notifications",
            None,
            buyer.access_token,
        ),
    }


def operations(doc: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    return {
        op["operationId"]: (verb.upper(), path, op)
        for path, item in doc["paths"].items()
        for verb, op in item.items()
    }


def test_every_documented_route_answers_as_documented(
    edge: Edge,
    document: dict[str, Any],
    world: dict[str, Any],
) -> None:
    examples = calls(world)
    documented = operations(document)
    assert set(documented) == set(examples), "an operation has no example call"
    # Cancel last: it changes the booking other calls read.
    for operation_id in sorted(documented, key=lambda o: o == "BookingService_CancelBooking"):
        verb, _, spec = documented[operation_id]
        method, path, body, token = examples[operation_id]
        assert method == verb, operation_id
        reply = edge.call(method, path, body, token=token)
        assert reply.status == 200, (operation_id, reply.status, reply.body)
        schema = spec["responses"]["200"]["content"]["application/json"]["schema"]
        assert violations(reply.body, schema, document) == [], operation_id
        if "security" in spec:
            refused = edge.call(method, path, body)
            assert refused.status == 401, (operation_id, refused.status)
