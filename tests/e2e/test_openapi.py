"""The OpenAPI document Envoy serves, checked against Envoy itself: every
documented operation, called validly, answers 200 with a body of the
documented schema."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from typing import Any

import jsonschema_rs
import pytest

from scripts.mail_sink import MailSink
from scripts.mesh import REPO
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.support import Edge, card, event_body, login, next_code, register_and_login


@pytest.fixture(scope="module")
def document(edge: Edge) -> dict[str, Any]:
    served = edge.get("/openapi.json")
    assert served.status == 200
    assert served.body == json.loads((REPO / "gen" / "openapi.json").read_text())
    return served.body


def violations(value: Any, schema: dict[str, Any], doc: dict[str, Any]) -> list[str]:
    """Where `value` departs from `schema`, a part of the document `doc`."""
    validator = jsonschema_rs.Draft202012Validator(
        {**schema, "components": doc["components"]}, validate_formats=True
    )
    return [f"{error.instance_path}: {error.message}" for error in validator.iter_errors(value)]


@pytest.fixture(scope="module")
def world(edge: Edge, mail_sink: MailSink) -> dict[str, Any]:
    """Real objects for the path parameters, and the tokens to reach them."""
    admin = login(edge, ADMIN_EMAIL, ADMIN_PASSWORD)
    buyer = register_and_login(edge, "openapi")
    # Whose role is set: a role change revokes the user's tokens (within a
    # second), which must not catch the buyer's later calls.
    bystander = register_and_login(edge, "openapi-role")
    # Who verifies their email with the code registration sent.
    verifier = register_and_login(edge, "openapi-verify")
    verification_code = next_code(mail_sink, verifier.email, "VERIFICATION_CODE")
    # Who resets their password with an emailed code, and who changes theirs
    # (each ends the account's sessions, so neither is anyone else).
    resetter = register_and_login(edge, "openapi-reset")
    assert edge.post("/v1/auth/password:reset", {"email": resetter.email}).status == 200
    reset_code = next_code(mail_sink, resetter.email, "PASSWORD_RESET")
    changer = register_and_login(edge, "openapi-change")
    leaver = register_and_login(edge, "openapi-leave")  # who deletes their account
    event = edge.post("/v1/events", event_body(), token=admin).body
    doomed = edge.post("/v1/events", event_body(title="Doomed"), token=admin).body
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
    tickets = edge.get(f"/v1/bookings/{booking['booking_id']}/tickets", token=buyer.access_token)
    holds = [
        edge.post(
            f"/v1/events/{event['event_id']}/holds", {"seat_ids": [seat]}, buyer.access_token
        ).body["hold_id"]
        for seat in ("standard-1-1", "standard-1-2")
    ]
    return {
        "admin": admin,
        "buyer": buyer,
        "bystander": bystander,
        "verifier": verifier,
        "verification_code": verification_code,
        "resetter": resetter,
        "reset_code": reset_code,
        "changer": changer,
        "leaver": leaver,
        "event": event,
        "doomed": doomed,
        "booking": booking,
        "ticket": tickets.body["tickets"][0]["ticket_token"],
        "holds": holds,
    }


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
        "AuthService_VerifyEmail": (
            "POST",
            "/v1/auth/verifyEmail",
            {"email": world["verifier"].email, "code": world["verification_code"]},
            None,
        ),
        "AuthService_ResendVerification": (
            "POST",
            "/v1/auth/verifyEmail:resend",
            {"email": f"openapi-{uuid.uuid4().hex[:10]}@example.com"},
            None,
        ),
        "AuthService_RequestPasswordReset": (
            "POST",
            "/v1/auth/password:reset",
            {"email": f"openapi-{uuid.uuid4().hex[:10]}@example.com"},
            None,
        ),
        "AuthService_ResetPassword": (
            "POST",
            "/v1/auth/password:set",
            {
                "email": world["resetter"].email,
                "code": world["reset_code"],
                "new_password": "battery-staple-9",
            },
            None,
        ),
        "AuthService_ChangePassword": (
            "POST",
            "/v1/users/me:changePassword",
            {"current_password": world["changer"].password, "new_password": "battery-staple-9"},
            world["changer"].access_token,
        ),
        "AuthService_DeleteMe": (
            "DELETE",
            "/v1/users/me",
            {"current_password": world["leaver"].password},
            world["leaver"].access_token,
        ),
        "AuthService_GetMe": ("GET", "/v1/users/me", None, buyer.access_token),
        "AuthService_GetJwks": ("GET", "/v1/auth/jwks", None, None),
        "AuthService_ListUsers": ("GET", "/v1/users?page_size=2", None, admin),
        "AuthService_SetUserRole": (
            "POST",
            f"/v1/users/{world['bystander'].user_id}:setRole",
            {"role": "ROLE_USER"},
            admin,
        ),
        "EventService_CreateEvent": ("POST", "/v1/events", event_body(), admin),
        "EventService_GetEvent": ("GET", f"/v1/events/{event_id}", None, None),
        "EventService_UpdateEvent": (
            "PATCH",
            f"/v1/events/{event_id}?update_mask=description",
            {"description": "Edited"},
            admin,
        ),
        "EventService_PublishEvent": ("POST", f"/v1/events/{event_id}:publish", {}, admin),
        "EventService_CancelEvent": (
            "POST",
            f"/v1/events/{world['doomed']['event_id']}:cancel",
            {"reason": "Storm"},
            admin,
        ),
        "EventService_ListEvents": ("GET", "/v1/events?page_size=2", None, None),
        "EventService_ListSeats": ("GET", f"/v1/events/{event_id}/seats?tier=TIER_VIP", None, None),
        "EventService_GetSalesReport": ("GET", f"/v1/events/{event_id}/sales", None, admin),
        "EventService_CreateHold": (
            "POST",
            f"/v1/events/{event_id}/holds",
            {"best_available": {"tier": "TIER_STANDARD", "quantity": 2}},
            buyer.access_token,
        ),
        "EventService_GetHold": ("GET", f"/v1/holds/{world['holds'][0]}", None, buyer.access_token),
        "EventService_RenewHold": (
            "POST",
            f"/v1/holds/{world['holds'][0]}:renew",
            {},
            buyer.access_token,
        ),
        "EventService_ReleaseHold": (
            "DELETE",
            f"/v1/holds/{world['holds'][1]}",
            None,
            buyer.access_token,
        ),
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
        "BookingService_ListTickets": (
            "GET",
            f"/v1/bookings/{booking['booking_id']}/tickets",
            None,
            buyer.access_token,
        ),
        "BookingService_GetTicketsPdf": (
            "GET",
            f"/v1/bookings/{booking['booking_id']}/tickets.pdf",
            None,
            buyer.access_token,
        ),
        "BookingService_CheckIn": (
            "POST",
            "/v1/tickets:checkIn",
            {"ticket_token": world["ticket"], "event_id": event_id},
            admin,
        ),
        "BookingService_GetTicketKeys": ("GET", "/v1/tickets/jwks", None, None),
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
        [(content_type, content)] = spec["responses"]["200"]["content"].items()
        assert reply.headers["content-type"] == content_type, operation_id
        if content_type == "application/json":
            assert violations(reply.body, content["schema"], document) == [], operation_id
        if "security" in spec:
            refused = edge.call(method, path, body)
            assert refused.status == 401, (operation_id, refused.status)


@pytest.mark.parametrize("method", ["DELETE", "PUT", "PATCH", "TRACE", "OPTIONS", "QUERY"])
def test_undeclared_methods_are_405_with_allow(edge: Edge, method: str) -> None:
    for path, allow in [
        ("/v1/events", "GET, POST"),
        ("/v1/events/some-event/seats", "GET"),
        ("/v1/bookings/some-booking:cancel", "POST"),
        ("/v1/users/me", "DELETE, GET"),
    ]:
        if method in allow.split(", "):
            continue
        # QUERY must carry a body (Envoy refuses one without a content type as malformed).
        reply = edge.call(method, path, {} if method == "QUERY" else None)
        assert (reply.status, reply.headers.get("allow")) == (405, allow), (method, path)
        assert reply.body["code"] == 12  # UNIMPLEMENTED, as a google.rpc.Status
    assert edge.call(method, "/v1/nowhere").status == 404


def fuzzing_account(edge: Edge) -> tuple[str, list[str]]:
    """An admin token of an account of the fuzzer's own, and the ids of the
    accounts it must leave alone (its own and the suite's admin)."""
    admin = login(edge, ADMIN_EMAIL, ADMIN_PASSWORD)
    account = register_and_login(edge, "fuzzer")
    promoted = edge.post(f"/v1/users/{account.user_id}:setRole", {"role": "ROLE_ADMIN"}, admin)
    assert promoted.status == 200, promoted.body
    token = login(edge, account.email, account.password)
    return token, [edge.get("/v1/users/me", token=admin).body["user_id"], account.user_id]


def test_schemathesis_finds_nothing(edge: Edge, document: dict[str, Any]) -> None:
    """Schemathesis over /openapi.json with every check: no 5xx, every response
    as documented, no valid request refused, no invalid one accepted, 405 with
    Allow for undeclared methods. Its settings: tests/e2e/schemathesis.toml."""
    token, protected = fuzzing_account(edge)
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks",
        "FUZZ_PROTECTED_USERS": ",".join(protected),
        "PYTHONPATH": str(REPO),
    }
    done = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "st"),
            "--config-file",
            str(REPO / "tests" / "e2e" / "schemathesis.toml"),
            "run",
            f"{edge.base_url}/openapi.json",
            "--url",
            edge.base_url,
            "--header",
            f"Authorization: Bearer {token}",
            "--seed",
            os.environ.get("FUZZ_SEED", "1"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-20_000:] + done.stderr[-5_000:]
