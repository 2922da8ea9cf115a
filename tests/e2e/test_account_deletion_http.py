"""Account deletion through Envoy: DELETE /v1/users/me with the current
password ends every session and erases the email and name from every
service's database (auth at once, the others through `user.deleted`), while
the bookings, payments and notifications stay for accounting."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from runtime.db import libpq_url
from scripts.mail_sink import MailSink
from scripts.mesh import SERVICES, Mesh
from tests.e2e.test_accounts_http import sessions_ended
from tests.e2e.test_auth_http import assert_error
from tests.e2e.test_messaging import publish
from tests.support import (
    Account,
    Edge,
    book,
    event_body,
    register_and_login,
    unique_email,
    wait_for,
)
from ticketing.auth.v1 import messages_pb2 as auth_messages

PATH = "/v1/users/me"


def database(mesh: Mesh, service: str) -> psycopg.Connection:
    return psycopg.connect(libpq_url(mesh.env[f"{service.upper()}_DATABASE_URL"]), autocommit=True)


def rows_mentioning(mesh: Mesh, service: str, *words: str) -> dict[str, int]:
    """Per table of the service's database, how many rows hold any of `words`,
    as text or inside a binary column (a stored message)."""
    found = {}
    with database(mesh, service) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            )
        ]
        for table in tables:
            # A row as text shows a bytea column as hex: look for the words both ways.
            needles = [w.lower() for w in words] + [w.encode().hex() for w in words]
            [(count,)] = conn.execute(
                f"SELECT count(*) FROM {table} AS t WHERE "
                + " OR ".join(["position(%s IN lower(t::text)) > 0"] * len(needles)),
                needles,
            ).fetchall()
            if count:
                found[table] = count
    return found


def delete_account(edge: Edge, account: Account, password: str | None = None) -> object:
    return edge.call(
        "DELETE",
        PATH,
        {"current_password": account.password if password is None else password},
        token=account.access_token,
    )


def notifications(edge: Edge, token: str) -> list[dict]:
    return edge.get("/v1/notifications", token=token).body["notifications"]


def test_a_deleted_account_is_erased_everywhere_and_its_bookings_stay(
    edge: Edge, mesh: Mesh, organizer: str, mail_sink: MailSink
) -> None:
    name = f"Leaving {uuid.uuid4().hex[:8]}"
    email = unique_email("leaving")
    assert (
        edge.post(
            "/v1/auth/register", {"email": email, "password": "correct-horse", "display_name": name}
        ).status
        == 200
    )
    tokens = edge.post("/v1/auth/login", {"email": email, "password": "correct-horse"}).body
    me = edge.get(PATH, token=tokens["access_token"]).body
    account = Account(
        me["user_id"], email, "correct-horse", tokens["access_token"], tokens["refresh_token"]
    )
    other = edge.post("/v1/auth/login", {"email": email, "password": "correct-horse"}).body
    event = edge.post("/v1/events", event_body(title="Last show"), token=organizer).body
    booked = book(edge, account.access_token, event["event_id"], ["vip-1-1"])
    assert booked.status == 200, booked.body
    booking = booked.body
    # The welcome, the verification code and the tickets are all recorded.
    wait_for(lambda: len(notifications(edge, account.access_token)) == 3, "three notifications")
    for service in ("auth", "booking", "notification"):
        assert rows_mentioning(mesh, service, email, name), service

    deleted = delete_account(edge, account)
    assert (deleted.status, deleted.body) == (200, {})

    sessions_ended(
        edge,
        account,
        [
            (account.access_token, account.refresh_token),
            (other["access_token"], other["refresh_token"]),
        ],
    )

    def anywhere() -> dict[str, dict[str, int]]:
        found = {s: rows_mentioning(mesh, s, email, name) for s in SERVICES}
        return {s: tables for s, tables in found.items() if tables}

    wait_for(lambda: anywhere() == {}, f"{email} erased from every database", timeout=30)

    # For accounting, the booking and its payment stay, under the user id
    # that no account has any more.
    with database(mesh, "booking") as conn:
        [(user_id, state, user_email)] = conn.execute(
            "SELECT user_id, state, user_email FROM bookings WHERE booking_id = %s",
            (booking["booking_id"],),
        ).fetchall()
    assert (str(user_id), state, user_email) == (account.user_id, 2, "")  # CONFIRMED
    with database(mesh, "payment") as conn:
        [(payer, amount)] = conn.execute(
            "SELECT user_id, amount_minor FROM payments WHERE payment_id = %s",
            (booking["payment_id"],),
        ).fetchall()
    assert (str(payer), amount) == (account.user_id, 15000)
    with database(mesh, "notification") as conn:
        kept = conn.execute(
            "SELECT kind, recipient, length(payload) FROM notifications WHERE user_id = %s",
            (account.user_id,),
        ).fetchall()
    assert sorted(k for k, _, _ in kept) == [1, 2, 6] and {(r, n) for _, r, n in kept} == {("", 0)}
    with database(mesh, "auth") as conn:
        for table in ("users", "refresh_tokens", "account_codes"):
            [(count,)] = conn.execute(
                f"SELECT count(*) FROM {table} WHERE user_id = %s",
                (account.user_id,),
            ).fetchall()
            assert count == 0, table

    # The address is free: a new account, which has none of the old one's.
    again = edge.post(
        "/v1/auth/register", {"email": email, "password": "battery-staple", "display_name": name}
    )
    assert again.status == 200, again.body
    assert again.body["user_id"] != account.user_id
    fresh = edge.post("/v1/auth/login", {"email": email, "password": "battery-staple"}).body
    assert edge.get("/v1/bookings", token=fresh["access_token"]).body.get("bookings", []) == []
    assert edge.get(PATH, token=fresh["access_token"]).body["email"] == email


def test_deletion_survives_redelivery_and_spares_other_accounts(
    edge: Edge, mesh: Mesh, organizer: str
) -> None:
    """The same user.deleted again (and an old one for an account that
    registered the address again) changes nothing more."""
    leaving = register_and_login(edge, "redelivered")
    staying = register_and_login(edge, "staying")
    event = edge.post("/v1/events", event_body(title="Encore"), token=organizer).body
    assert book(edge, staying.access_token, event["event_id"], ["vip-1-1"]).status == 200
    assert delete_account(edge, leaving).status == 200
    wait_for(
        lambda: not rows_mentioning(mesh, "notification", leaving.email),
        "the notification service erased the account",
    )
    body = auth_messages.UserDeleted(user_id=leaving.user_id).SerializeToString()
    message_id = str(uuid.uuid4())
    for _ in range(2):
        publish(mesh, "user.deleted", body, "ticketing.auth.v1.UserDeleted", message_id)
    publish(mesh, "user.deleted", body, "ticketing.auth.v1.UserDeleted", str(uuid.uuid4()))
    wait_for(
        lambda: len(notifications(edge, staying.access_token)) == 3, "the staying account's emails"
    )
    with database(mesh, "booking") as conn:
        [(kept,)] = conn.execute(
            "SELECT user_email FROM bookings WHERE user_id = %s", (staying.user_id,)
        ).fetchall()
    assert kept == staying.email
    assert rows_mentioning(mesh, "notification", staying.email)
    assert edge.get(PATH, token=staying.access_token).body["email"] == staying.email


@pytest.mark.parametrize("password", ["wrong-password", ""])
def test_a_wrong_password_deletes_nothing(edge: Edge, password: str) -> None:
    account = register_and_login(edge, "keeping")
    refused = delete_account(edge, account, password)
    assert_error(refused, 403)
    assert refused.reason == "WRONG_PASSWORD"
    assert edge.get(PATH, token=account.access_token).body["email"] == account.email
    assert edge.post("/v1/auth/refresh", {"refresh_token": account.refresh_token}).status == 200


def test_deletion_needs_a_session(edge: Edge) -> None:
    refused = edge.call("DELETE", PATH, {"current_password": "correct-horse"})
    assert_error(refused, 401)
    assert refused.reason


def test_a_deleted_account_cannot_be_deleted_again(edge: Edge) -> None:
    """A retry with the same token, before the revocation reaches the edge's
    services, finds no account; after it, no session."""
    account = register_and_login(edge, "twice")
    assert delete_account(edge, account).status == 200
    again = delete_account(edge, account)
    assert again.status in (401, 404), again.body
    assert_error(again, again.status)
