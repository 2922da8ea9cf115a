"""Accounts through Envoy: email verification and password reset by emailed
codes, with the codes' failure modes (wrong, expired, reused, guessed, raced,
sent too often), and password change; both end every session."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from runtime.db import libpq_url
from scripts.mail_sink import MailSink
from scripts.mesh import Mesh, free_port
from tests.e2e.test_auth_http import assert_error, refused_within
from tests.support import (
    Account,
    Edge,
    book,
    error_reason_metadata,
    event_body,
    mint_token,
    next_code,
    register_and_login,
    start_second_edge,
    unique_email,
    wait_for,
)

VERIFICATION = "VERIFICATION_CODE"


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def auth_db(mesh: Mesh) -> psycopg.Connection:
    return psycopg.connect(libpq_url(mesh.env["AUTH_DATABASE_URL"]), autocommit=True)


def resend(edge: Edge, email: str) -> int:
    return edge.post("/v1/auth/verifyEmail:resend", {"email": email}).status


def test_registration_emails_a_code_that_verifies_the_email_once(
    edge: Edge, mail_sink: MailSink
) -> None:
    account = register_and_login(edge, "verify")
    assert edge.get("/v1/users/me", token=account.access_token).body["email_verified"] is False
    code = next_code(mail_sink, account.email, VERIFICATION)

    refused = edge.post("/v1/auth/verifyEmail", {"email": account.email, "code": wrong(code)})
    assert_error(refused, 400)
    assert refused.reason == "INVALID_CODE"

    verified = edge.post("/v1/auth/verifyEmail", {"email": account.email.upper(), "code": code})
    assert verified.status == 200, verified.body
    assert verified.body["user_id"] == account.user_id and verified.body["email_verified"] is True
    assert edge.get("/v1/users/me", token=account.access_token).body["email_verified"] is True

    reused = edge.post("/v1/auth/verifyEmail", {"email": account.email, "code": code})
    assert_error(reused, 400)
    assert reused.reason == "INVALID_CODE"
    # A verified account gets no new code, and the answer does not say so.
    assert resend(edge, account.email) == 200

    listed = edge.get("/v1/notifications", token=account.access_token).body["notifications"]
    codes = [n for n in listed if n["kind"] == "NOTIFICATION_KIND_VERIFICATION_CODE"]
    assert len(codes) == 1 and codes[0]["booking_id"] == "" and codes[0]["event_id"] == ""


def test_an_unknown_address_and_a_wrong_code_answer_alike(edge: Edge, mail_sink: MailSink) -> None:
    account = register_and_login(edge, "alike")
    code = next_code(mail_sink, account.email, VERIFICATION)
    known = edge.post("/v1/auth/verifyEmail", {"email": account.email, "code": wrong(code)})
    unknown = edge.post("/v1/auth/verifyEmail", {"email": unique_email(), "code": code})
    assert_error(unknown, 400)
    assert known.body == unknown.body
    assert resend(edge, unique_email("nobody")) == 200


def test_five_wrong_guesses_kill_the_code(edge: Edge, mail_sink: MailSink) -> None:
    account = register_and_login(edge, "guess")
    code = next_code(mail_sink, account.email, VERIFICATION)
    guesses = [g for g in (f"{n:06d}" for n in range(6)) if g != code][:5]
    replies = [
        edge.post("/v1/auth/verifyEmail", {"email": account.email, "code": g}) for g in guesses
    ]
    assert [r.reason for r in replies] == ["INVALID_CODE"] * 5
    # Five tries spent: the right code fails too.
    late = edge.post("/v1/auth/verifyEmail", {"email": account.email, "code": code})
    assert_error(late, 400)
    assert late.reason == "INVALID_CODE"
    # A new code works.
    assert resend(edge, account.email) == 200
    fresh = next_code(mail_sink, account.email, VERIFICATION, seen=1)
    ok = edge.post("/v1/auth/verifyEmail", {"email": account.email, "code": fresh})
    assert ok.status == 200 and ok.body["email_verified"] is True


def test_racing_uses_of_one_code_verify_once(edge: Edge, mail_sink: MailSink) -> None:
    account = register_and_login(edge, "race")
    code = next_code(mail_sink, account.email, VERIFICATION)
    with ThreadPoolExecutor(8) as pool:
        replies = list(
            pool.map(
                lambda _: edge.post("/v1/auth/verifyEmail", {"email": account.email, "code": code}),
                range(8),
            )
        )
    assert sorted(r.status for r in replies) == [200] + [400] * 7, [r.body for r in replies]
    assert {r.reason for r in replies if r.status == 400} == {"INVALID_CODE"}


def test_an_expired_code_is_refused(edge: Edge, mesh: Mesh, mail_sink: MailSink) -> None:
    account = register_and_login(edge, "expired")
    code = next_code(mail_sink, account.email, VERIFICATION)
    with auth_db(mesh) as conn:  # fifteen minutes pass
        conn.execute(
            "UPDATE account_codes SET expire_time = now() - interval '1 second' WHERE user_id = %s",
            (account.user_id,),
        )
    late = edge.post("/v1/auth/verifyEmail", {"email": account.email, "code": code})
    assert_error(late, 400)
    assert late.reason == "INVALID_CODE"


def test_a_resent_code_replaces_the_last_and_resends_are_limited(
    edge: Edge, mail_sink: MailSink
) -> None:
    account = register_and_login(edge, "resend")
    first = next_code(mail_sink, account.email, VERIFICATION)
    assert resend(edge, account.email) == 200
    again = edge.post("/v1/auth/verifyEmail:resend", {"email": account.email})
    assert_error(again, 429)
    assert again.reason == "TOO_MANY_CODES"
    assert error_reason_metadata(again)["retry_after_seconds"] == "1"
    second = next_code(mail_sink, account.email, VERIFICATION, seen=1)
    if first != second:  # one in a million they are the same
        stale = edge.post("/v1/auth/verifyEmail", {"email": account.email, "code": first})
        assert stale.reason == "INVALID_CODE"
    # Five sends an hour per address, known or not (the test mesh allows one a second).
    for email, sent in ((account.email, 1), (unique_email("nobody"), 0)):
        for _ in range(sent, 5):
            wait_for(lambda e=email: resend(edge, e) == 200, "the resend interval")
        wait_for(
            lambda e=email: (
                (r := edge.post("/v1/auth/verifyEmail:resend", {"email": e})).status == 429
                and int(error_reason_metadata(r)["retry_after_seconds"]) > 60
            ),
            "the hourly cap",
            timeout=5,
        )


def test_codes_are_stored_as_keyed_hashes(edge: Edge, mesh: Mesh, mail_sink: MailSink) -> None:
    account = register_and_login(edge, "hashed")
    code = next_code(mail_sink, account.email, VERIFICATION)
    with auth_db(mesh) as conn:
        [(digest,)] = conn.execute(
            "SELECT code_digest FROM account_codes WHERE user_id = %s", (account.user_id,)
        ).fetchall()
    assert code.encode() not in digest and len(digest) == 32
    assert digest != hashlib.sha256(code.encode()).digest()


@pytest.mark.parametrize(
    ("body", "violations"),
    [
        (
            {"email": "x@example.com", "code": "12345"},
            {"code": "must be the 6 digits of the email"},
        ),
        (
            {"email": "x@example.com", "code": "12345a"},
            {"code": "must be the 6 digits of the email"},
        ),
        ({}, {"email": "is required", "code": "is required"}),
        ({"email": "nope", "code": "123456"}, {"email": "is not a valid email address"}),
    ],
)
def test_malformed_verifications_are_400_with_field_violations(
    edge: Edge, body: dict, violations: dict
) -> None:
    reply = edge.post("/v1/auth/verifyEmail", body)
    assert_error(reply, 400)
    assert reply.violations == violations


@pytest.fixture(scope="module")
def strict_edge(mesh: Mesh) -> Iterator[Edge]:
    """Booking and event services run with REQUIRE_VERIFIED_EMAIL=true, behind an
    Envoy of their own."""
    booking_addr, event_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    mesh.start_service(
        "booking",
        name="booking-verified",
        env={"BOOKING_GRPC_ADDR": booking_addr, "REQUIRE_VERIFIED_EMAIL": "true"},
    )
    mesh.start_service(
        "event",
        name="event-verified",
        env={"EVENT_GRPC_ADDR": event_addr, "REQUIRE_VERIFIED_EMAIL": "true"},
    )
    yield start_second_edge(
        mesh, "envoy-verified", BOOKING_GRPC_ADDR=booking_addr, EVENT_GRPC_ADDR=event_addr
    )
    mesh.stop("envoy-verified")
    mesh.stop("event-verified")
    mesh.stop("booking-verified")


def test_require_verified_email_refuses_unverified_buyers(
    strict_edge: Edge, mail_sink: MailSink, keys_dir: Path
) -> None:
    organizer = mint_token(keys_dir, role="organizer")
    event = strict_edge.post("/v1/events", event_body(title="Verified only"), token=organizer)
    assert event.status == 200, event.body
    buyer: Account = register_and_login(strict_edge, "strict")
    refused = book(strict_edge, buyer.access_token, event.body["event_id"], ["vip-1-1"])
    assert_error(refused, 400)
    assert refused.reason == "EMAIL_NOT_VERIFIED"
    hold = {"seat_ids": ["vip-1-2"], "request_id": "strict-hold"}
    holds = f"/v1/events/{event.body['event_id']}/holds"
    not_held = strict_edge.post(holds, hold, token=buyer.access_token)
    assert_error(not_held, 400)
    assert not_held.reason == "EMAIL_NOT_VERIFIED"

    code = next_code(mail_sink, buyer.email, VERIFICATION)
    assert (
        strict_edge.post("/v1/auth/verifyEmail", {"email": buyer.email, "code": code}).status == 200
    )
    # The old token still says unverified; a refreshed one says verified.
    assert book(strict_edge, buyer.access_token, event.body["event_id"], ["vip-1-1"]).status == 400
    renewed = strict_edge.post("/v1/auth/refresh", {"refresh_token": buyer.refresh_token})
    booked = book(strict_edge, renewed.body["access_token"], event.body["event_id"], ["vip-1-1"])
    held = strict_edge.post(holds, hold, token=renewed.body["access_token"])
    assert held.status == 200, held.body
    assert booked.status == 200, booked.body
    assert booked.body["state"] == "BOOKING_STATE_CONFIRMED"


def test_by_default_unverified_buyers_book(edge: Edge, keys_dir: Path) -> None:
    organizer = mint_token(keys_dir, role="organizer")
    event = edge.post("/v1/events", event_body(title="Anyone"), token=organizer).body
    buyer = register_and_login(edge, "default")
    assert edge.get("/v1/users/me", token=buyer.access_token).body["email_verified"] is False
    assert book(edge, buyer.access_token, event["event_id"], ["vip-1-1"]).status == 200


# -- password reset and change ------------------------------------------------

RESET = "PASSWORD_RESET"


def sessions_ended(edge: Edge, account: Account, tokens: list[tuple[str, str]]) -> None:
    """Every (access, refresh) pair from before is dead: the refresh tokens at
    once, the access tokens on every service within seconds."""
    for access, refresh in tokens:
        refused = edge.post("/v1/auth/refresh", {"refresh_token": refresh})
        assert_error(refused, 401)
        for path in ("/v1/users/me", "/v1/bookings", "/v1/notifications"):
            refused_within(edge, path, access, 5)
    stale = edge.post("/v1/auth/login", {"email": account.email, "password": account.password})
    assert_error(stale, 401)


def test_a_reset_code_sets_a_new_password_and_ends_every_session(
    edge: Edge, mail_sink: MailSink
) -> None:
    account = register_and_login(edge, "forgot")
    second = edge.post("/v1/auth/login", {"email": account.email, "password": account.password})
    asked = edge.post("/v1/auth/password:reset", {"email": account.email})
    assert (asked.status, asked.body) == (200, {})
    code = next_code(mail_sink, account.email, RESET)
    body = {"email": account.email, "code": code, "new_password": "battery-staple-9"}

    refused = edge.post("/v1/auth/password:set", {**body, "code": wrong(code)})
    assert_error(refused, 400)
    assert refused.reason == "INVALID_CODE"
    # The verification code is not a reset code, nor the other way round.
    verification = next_code(mail_sink, account.email, VERIFICATION)
    assert edge.post("/v1/auth/password:set", {**body, "code": verification}).status == 400
    assert edge.post("/v1/auth/verifyEmail", {"email": account.email, "code": code}).reason == (
        "INVALID_CODE"
    )

    done = edge.post("/v1/auth/password:set", body)
    assert (done.status, done.body) == (200, {})
    sessions_ended(
        edge,
        account,
        [
            (account.access_token, account.refresh_token),
            (second.body["access_token"], second.body["refresh_token"]),
        ],
    )
    fresh = edge.post("/v1/auth/login", {"email": account.email, "password": "battery-staple-9"})
    assert fresh.status == 200
    me = edge.get("/v1/users/me", token=fresh.body["access_token"]).body
    assert me["email_verified"] is True  # the code came to the address
    again = edge.post("/v1/auth/password:set", {**body, "new_password": "another-one-77"})
    assert_error(again, 400)
    assert again.reason == "INVALID_CODE"  # used


def test_a_reset_for_an_unknown_address_answers_alike_and_sends_nothing(
    edge: Edge, mail_sink: MailSink
) -> None:
    nobody = unique_email("nobody")
    asked = edge.post("/v1/auth/password:reset", {"email": nobody})
    assert (asked.status, asked.body) == (200, {})
    attempt = edge.post(
        "/v1/auth/password:set",
        {"email": nobody, "code": "123456", "new_password": "battery-staple-9"},
    )
    assert_error(attempt, 400)
    assert attempt.reason == "INVALID_CODE"
    # The limit applies to it as to a real account.
    again = edge.post("/v1/auth/password:reset", {"email": nobody})
    assert_error(again, 429)
    assert again.reason == "TOO_MANY_CODES"
    assert all(m["To"] != nobody for m in mail_sink.messages)


def test_reset_codes_allow_five_tries(edge: Edge, mail_sink: MailSink) -> None:
    account = register_and_login(edge, "brute")
    edge.post("/v1/auth/password:reset", {"email": account.email})
    code = next_code(mail_sink, account.email, RESET)
    body = {"email": account.email, "new_password": "battery-staple-9"}
    guesses = [g for g in (f"{n:06d}" for n in range(6)) if g != code][:5]
    for guess in guesses:
        assert edge.post("/v1/auth/password:set", {**body, "code": guess}).reason == (
            "INVALID_CODE"
        )
    assert edge.post("/v1/auth/password:set", {**body, "code": code}).reason == "INVALID_CODE"
    # The password stayed.
    assert (
        edge.post("/v1/auth/login", {"email": account.email, "password": account.password}).status
        == 200
    )


def test_an_expired_reset_code_is_refused(edge: Edge, mesh: Mesh, mail_sink: MailSink) -> None:
    account = register_and_login(edge, "late")
    edge.post("/v1/auth/password:reset", {"email": account.email})
    code = next_code(mail_sink, account.email, RESET)
    with auth_db(mesh) as conn:  # fifteen minutes pass
        conn.execute(
            "UPDATE account_codes SET expire_time = now() - interval '1 second' "
            "WHERE user_id = %s AND purpose = 'reset_password'",
            (account.user_id,),
        )
    late = edge.post(
        "/v1/auth/password:set",
        {"email": account.email, "code": code, "new_password": "battery-staple-9"},
    )
    assert late.reason == "INVALID_CODE"


def test_change_password_needs_the_current_one_and_ends_every_session(edge: Edge) -> None:
    account = register_and_login(edge, "change")
    path = "/v1/users/me:changePassword"
    wrong_current = edge.post(
        path,
        {"current_password": "not-my-password", "new_password": "battery-staple-9"},
        token=account.access_token,
    )
    assert_error(wrong_current, 403)
    assert wrong_current.reason == "WRONG_PASSWORD"
    weak = edge.post(
        path,
        {"current_password": account.password, "new_password": "password123"},
        token=account.access_token,
    )
    assert_error(weak, 400)
    assert set(weak.violations) == {"new_password"}
    assert_error(
        edge.post(path, {"current_password": account.password, "new_password": "x" * 12}), 401
    )

    changed = edge.post(
        path,
        {"current_password": account.password, "new_password": "battery-staple-9"},
        token=account.access_token,
    )
    assert (changed.status, changed.body) == (200, {})
    sessions_ended(edge, account, [(account.access_token, account.refresh_token)])
    assert (
        edge.post("/v1/auth/login", {"email": account.email, "password": "battery-staple-9"}).status
        == 200
    )


@pytest.mark.parametrize(
    ("body", "violations"),
    [
        (
            {"email": "x@example.com", "code": "1234567", "new_password": "battery-staple-9"},
            {"code": "must be the 6 digits of the email"},
        ),
        (
            {"email": "x@example.com", "code": "123456", "new_password": "short"},
            {"new_password": "must be at least 10 characters"},
        ),
        ({}, {"email": "is required", "code": "is required", "new_password": "is required"}),
    ],
)
def test_malformed_resets_are_400_with_field_violations(
    edge: Edge, body: dict, violations: dict
) -> None:
    reply = edge.post("/v1/auth/password:set", body)
    assert_error(reply, 400)
    assert reply.violations == violations


def test_a_code_in_the_url_is_refused(edge: Edge) -> None:
    reply = edge.post("/v1/auth/verifyEmail?code=123456", {"email": "x@example.com"})
    assert_error(reply, 400)
    assert reply.reason == "SECRET_IN_URL"
