"""The auth flows as a browser or curl sees them: HTTP/JSON through Envoy."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from runtime.signing import KeyRing
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.support import Edge, Reply, login, register_and_login, unique_email


def assert_error(reply: Reply, status: int) -> None:
    """An error is the status we expect with a google.rpc.Status-shaped JSON body."""
    assert reply.status == status, (reply.status, reply.body)
    assert isinstance(reply.body, dict), reply.body
    assert isinstance(reply.body.get("code"), int) and reply.body.get("message"), reply.body
    assert reply.headers["content-type"].startswith("application/json")


def test_register_login_me_refresh_logout(edge: Edge) -> None:
    account = register_and_login(edge)
    me = edge.get("/v1/users/me", token=account.access_token)
    assert me.status == 200
    assert me.body == {
        "user_id": account.user_id,
        "email": account.email,
        "display_name": "User",
        "role": "ROLE_USER",
        "create_time": me.body["create_time"],
        "email_verified": False,
    }

    renewed = edge.post("/v1/auth/refresh", {"refresh_token": account.refresh_token})
    assert renewed.status == 200
    assert set(renewed.body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert renewed.body["token_type"] == "Bearer" and renewed.body["expires_in"] == 900
    assert edge.get("/v1/users/me", token=renewed.body["access_token"]).status == 200

    reused = edge.post("/v1/auth/refresh", {"refresh_token": account.refresh_token})
    assert_error(reused, 401)
    assert reused.reason == "REFRESH_TOKEN_REUSED"

    fresh = edge.post("/v1/auth/login", {"email": account.email, "password": account.password})
    assert (
        edge.post("/v1/auth/logout", {"refresh_token": fresh.body["refresh_token"]}).status == 200
    )
    assert_error(edge.post("/v1/auth/refresh", {"refresh_token": fresh.body["refresh_token"]}), 401)


def test_jwks_is_public_and_lists_es256_keys(edge: Edge) -> None:
    reply = edge.get("/v1/auth/jwks")
    assert reply.status == 200
    assert reply.body["keys"]
    for key in reply.body["keys"]:
        assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-256", "ES256", "sig")


def test_admin_changes_a_role_and_plain_users_cannot(edge: Edge) -> None:
    admin = login(edge, ADMIN_EMAIL, ADMIN_PASSWORD)
    someone = register_and_login(edge)
    assert_error(
        edge.post(
            f"/v1/users/{someone.user_id}:setRole",
            {"role": "ROLE_ADMIN"},
            token=someone.access_token,
        ),
        403,
    )
    assert_error(edge.get("/v1/users", token=someone.access_token), 403)

    changed = edge.post(
        f"/v1/users/{someone.user_id}:setRole", {"role": "ROLE_ORGANIZER"}, token=admin
    )
    assert changed.status == 200 and changed.body["role"] == "ROLE_ORGANIZER"
    listed = edge.get("/v1/users?page_size=100", token=admin)
    assert listed.status == 200
    assert any(u["user_id"] == someone.user_id for u in listed.body["users"])
    assert_error(
        edge.post(f"/v1/users/{uuid.uuid4()}:setRole", {"role": "ROLE_USER"}, token=admin), 404
    )


def test_duplicate_email_is_409(edge: Edge) -> None:
    account = register_and_login(edge)
    again = edge.post(
        "/v1/auth/register",
        {"email": account.email, "password": "whatever-1", "display_name": "Again"},
    )
    assert_error(again, 409)
    assert again.reason == "EMAIL_TAKEN"


def test_wrong_password_and_unknown_email_answer_alike(edge: Edge) -> None:
    account = register_and_login(edge)
    wrong = edge.post("/v1/auth/login", {"email": account.email, "password": "wrong-password"})
    unknown = edge.post("/v1/auth/login", {"email": unique_email(), "password": "wrong-password"})
    assert_error(wrong, 401)
    assert wrong.body == unknown.body


@pytest.mark.parametrize(
    ("body", "violations"),
    [
        (
            {"email": "not-an-email", "password": "long-enough", "display_name": "X"},
            {"email": "is not a valid email address"},
        ),
        (
            {"email": "x@example.com", "password": "short", "display_name": "X"},
            {"password": "must be at least 10 characters"},
        ),
        ({}, {"email": "is required", "password": "is required", "display_name": "is required"}),
    ],
)
def test_bad_registrations_are_400_with_field_violations(
    edge: Edge, body: dict, violations: dict
) -> None:
    reply = edge.post("/v1/auth/register", body)
    assert_error(reply, 400)
    assert reply.violations == violations


@pytest.mark.parametrize(
    "raw", [b'{"email":', b"not json", b'{"email": 5}', b"[1,2]", b'{"nope": 1}']
)
def test_malformed_json_is_400_with_a_json_body(edge: Edge, raw: bytes) -> None:
    assert_error(edge.call("POST", "/v1/auth/register", raw=raw), 400)


def test_unknown_paths_and_internal_rpcs_are_404(edge: Edge) -> None:
    assert_error(edge.get("/v1/nothing-here"), 404)
    assert_error(edge.post("/ticketing.event.v1.EventService/LockSeat", {}), 404)
    assert_error(edge.post("/ticketing.payment.v1.PaymentService/Charge", {}), 404)


def _claims(user_id: str, role: str = "user", **overrides: object) -> dict:
    now = int(time.time())
    return {
        "iss": "ticketing-auth",
        "aud": "ticketing",
        "sub": user_id,
        "role": role,
        "email": "x@example.com",
        "iat": now,
        "exp": now + 600,
        **overrides,
    }


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_bad_tokens_are_401(edge: Edge, keys_dir: Path) -> None:
    account = register_and_login(edge)
    ring = KeyRing(keys_dir)
    kid = ring.jwks()[-1]["kid"]
    expired = ring.sign(
        _claims(account.user_id, iat=int(time.time()) - 1000, exp=int(time.time()) - 60)
    )
    foreign = jwt.encode(
        _claims(account.user_id),
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"kid": kid},
    )
    alg_none = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(account.user_id, 'admin'))}."
    for token in (expired, foreign, alg_none, "garbage"):
        assert_error(edge.get("/v1/users/me", token=token), 401)
        assert_error(edge.get("/v1/users", token=token), 401)
    assert_error(edge.get("/v1/users/me"), 401)
    # A well-signed token is accepted, so the refusals above are about the token.
    assert edge.get("/v1/users/me", token=ring.sign(_claims(account.user_id))).status == 200


def test_request_ids_are_returned(edge: Edge) -> None:
    reply = edge.call("GET", "/v1/auth/jwks", headers={"x-request-id": "trace-me-123"})
    assert reply.headers.get("x-request-id") == "trace-me-123"


def refused_within(edge: Edge, path: str, token: str, seconds: float) -> float:
    """How long until `token` is refused on `path` (fails after `seconds`)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if edge.get(path, token=token).status == 401:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{path} still took the token after {seconds} s")


def test_a_demoted_admin_loses_admin_rights_within_seconds(edge: Edge) -> None:
    admin = login(edge, ADMIN_EMAIL, ADMIN_PASSWORD)
    deputy = register_and_login(edge, "deputy")
    promoted = edge.post(f"/v1/users/{deputy.user_id}:setRole", {"role": "ROLE_ADMIN"}, token=admin)
    assert promoted.status == 200
    deputy_admin = login(edge, deputy.email, deputy.password)
    assert edge.get("/v1/users", token=deputy_admin).status == 200

    demoted = edge.post(f"/v1/users/{deputy.user_id}:setRole", {"role": "ROLE_USER"}, token=admin)
    assert demoted.status == 200
    # Every service refuses the old token (auth here, booking below) within 5 s.
    refused_within(edge, "/v1/users", deputy_admin, 5)
    refused_within(edge, "/v1/bookings", deputy_admin, 5)
    # Signing in again gives a token with the new role, which counts at once.
    fresh = login(edge, deputy.email, deputy.password)
    assert edge.get("/v1/bookings", token=fresh).status == 200
    assert_error(edge.get("/v1/users", token=fresh), 403)


def test_logout_ends_the_access_token_everywhere(edge: Edge) -> None:
    account = register_and_login(edge, "leaving")
    assert edge.get("/v1/notifications", token=account.access_token).status == 200
    assert edge.post("/v1/auth/logout", {"refresh_token": account.refresh_token}).status == 200
    refused_within(edge, "/v1/notifications", account.access_token, 5)
    refused_within(edge, "/v1/users/me", account.access_token, 5)


def test_an_error_that_says_when_to_retry_carries_a_retry_after_header(edge: Edge) -> None:
    """The hint in the ErrorInfo (retry_after_seconds) reaches HTTP clients as a
    Retry-After header through Envoy, as BOOKING_PENDING's does."""
    account = register_and_login(edge, "throttled")
    guess = {"email": account.email, "password": "not-the-password"}
    for _ in range(5):
        assert edge.post("/v1/auth/login", guess).status == 401
    refused = edge.post("/v1/auth/login", guess)
    assert (refused.status, refused.reason) == (429, "TOO_MANY_ATTEMPTS")
    assert refused.headers["retry-after"] == "1"
