"""Cancelling an event through Envoy: every confirmed booking refunded,
cancelled and its buyer emailed, in the background, crash-safe (the booking
service killed mid-way finishes after its restart) and idempotent (cancel twice
is cancel once, no booking refunded twice)."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from runtime.db import libpq_url
from scripts.mail_sink import MailSink
from scripts.mesh import Mesh, envoy_clusters_healthy, free_port
from tests.audit import audit_event
from tests.e2e.test_auth_http import assert_error
from tests.e2e.test_messaging import drained, emails_about
from tests.faultproxy import FaultProxy
from tests.support import VISA_DECLINED, Edge, book, event_body, mint_token, wait_for

# Refunds in small batches, one at a time, and a lapsed lease retried at once:
# slow enough to kill the booking service mid-way, quick to recover.
SLOW_REFUNDS = {
    "EVENT_REFUND_CONCURRENCY": "1",
    "EVENT_REFUND_BATCH_SIZE": "4",
    "EVENT_REFUND_LEASE_SECONDS": "1",
}


@pytest.fixture(scope="module")
def slow_refunds(mesh: Mesh) -> Iterator[None]:
    """The booking service with SLOW_REFUNDS for this module, as usual after it."""
    restart(mesh, SLOW_REFUNDS)
    yield
    restart(mesh, {})


def restart(mesh: Mesh, env: dict[str, str], sig: int = signal.SIGTERM) -> None:
    mesh.stop("booking", sig)
    mesh.start_service("booking", env=env)
    edge_admin = int(mesh.env["EDGE_ADMIN_PORT"])
    wait_for(lambda: envoy_clusters_healthy(edge_admin, ["booking"]), "Envoy to see booking again")


def buyers(keys_dir: Path, count: int) -> list[str]:
    return [
        mint_token(keys_dir, email=f"fan-{uuid.uuid4().hex[:8]}@example.com") for _ in range(count)
    ]


def book_seats(edge: Edge, tokens: list[str], event_id: str) -> list[dict[str, Any]]:
    """One standard seat for each buyer, in parallel."""

    def one(i: int) -> dict[str, Any]:
        reply = book(edge, tokens[i], event_id, [f"standard-{i // 10 + 1}-{i % 10 + 1}"])
        assert reply.status == 200, reply.body
        return reply.body

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(len(tokens))))


def cancel(edge: Edge, token: str, event_id: str, reason: str = "The band is ill") -> dict:
    reply = edge.post(f"/v1/events/{event_id}:cancel", {"reason": reason}, token=token)
    assert reply.status == 200, reply.body
    return reply.body


def finished(edge: Edge, event_id: str) -> dict[str, Any] | None:
    event = edge.get(f"/v1/events/{event_id}").body
    return event if event.get("cancellation", {}).get("finish_time") else None


def refunds_per_payment(mesh: Mesh, payment_ids: list[str]) -> dict[str, int]:
    with psycopg.connect(libpq_url(mesh.env["PAYMENT_DATABASE_URL"])) as conn:
        rows = conn.execute(
            "SELECT p.payment_id::text, count(r.refund_id) FROM payments p "
            "LEFT JOIN refunds r ON r.payment_id = p.payment_id "
            "WHERE p.payment_id = ANY(%s::uuid[]) GROUP BY p.payment_id",
            (payment_ids,),
        ).fetchall()
    return dict(rows)


def cancelled_in_ledger(mesh: Mesh, event_id: str) -> int:
    with psycopg.connect(libpq_url(mesh.env["BOOKING_DATABASE_URL"])) as conn:
        [(count,)] = conn.execute(
            "SELECT count(*) FROM bookings WHERE event_id = %s AND state = 4", (event_id,)
        ).fetchall()
    return count


def assert_all_refunded_once(
    edge: Edge,
    mesh: Mesh,
    mail_sink: MailSink,
    event_id: str,
    bookings: list[dict],
    tokens: list[str],
) -> None:
    for booking, token in zip(bookings, tokens, strict=True):
        now = edge.get(f"/v1/bookings/{booking['booking_id']}", token=token).body
        assert now["state"] == "BOOKING_STATE_CANCELLED", now
    refunds = refunds_per_payment(mesh, [b["payment_id"] for b in bookings])
    assert refunds == {b["payment_id"]: 1 for b in bookings}
    drained(mesh, mail_sink)
    for booking in bookings:
        emails = emails_about(mail_sink, booking["booking_id"], "EVENT_CANCELLED")
        assert len(emails) == 1, booking["booking_id"]
    audit = audit_event(mesh, event_id)
    assert audit.problems == [] and audit.sold == {}


def test_cancelling_an_event_refunds_and_emails_every_buyer_once(
    edge: Edge, mesh: Mesh, mail_sink: MailSink, organizer: str, keys_dir: Path, slow_refunds: None
) -> None:
    event = edge.post("/v1/events", event_body(title="Doomed tour"), token=organizer).body
    event_id = event["event_id"]
    tokens = buyers(keys_dir, 12)
    bookings = book_seats(edge, tokens, event_id)
    declined = book(edge, tokens[0], event_id, ["vip-1-1"], VISA_DECLINED)
    assert declined.status == 400
    # One buyer cancelled before the event was: refunded once, by that.
    early = bookings.pop()
    early_token = tokens.pop()
    assert (
        edge.post(f"/v1/bookings/{early['booking_id']}:cancel", {}, token=early_token).status == 200
    )

    cancelled = cancel(edge, organizer, event_id)
    assert cancelled["state"] == "EVENT_STATE_CANCELLED"
    assert cancelled["cancellation"]["reason"] == "The band is ill"
    assert cancelled["etag"] != event["etag"]
    refused = book(edge, tokens[0], event_id, ["vip-2-1"])
    assert_error(refused, 400)
    assert refused.reason == "EVENT_CANCELLED"

    done = wait_for(lambda: finished(edge, event_id), "every booking refunded", timeout=90)
    assert done["cancellation"]["bookings_total"] == len(bookings) == 11
    assert done["cancellation"]["bookings_refunded"] == 11
    assert_all_refunded_once(edge, mesh, mail_sink, event_id, bookings, tokens)
    assert refunds_per_payment(mesh, [early["payment_id"]]) == {early["payment_id"]: 1}
    assert emails_about(mail_sink, early["booking_id"], "EVENT_CANCELLED") == []

    # Cancelling again changes nothing: same version, no second message.
    again = cancel(edge, organizer, event_id, "twice")
    assert again["etag"] == done["etag"] and again["cancellation"]["reason"] == "The band is ill"
    drained(mesh, mail_sink)
    assert refunds_per_payment(mesh, [b["payment_id"] for b in bookings]) == {
        b["payment_id"]: 1 for b in bookings
    }
    assert all(
        len(emails_about(mail_sink, b["booking_id"], "EVENT_CANCELLED")) == 1 for b in bookings
    )


def test_a_mass_refund_survives_a_killed_booking_service(
    edge: Edge, mesh: Mesh, mail_sink: MailSink, organizer: str, keys_dir: Path, slow_refunds: None
) -> None:
    event = edge.post("/v1/events", event_body(title="Killed midway"), token=organizer).body
    event_id = event["event_id"]
    tokens = buyers(keys_dir, 30)
    bookings = book_seats(edge, tokens, event_id)
    cancel(edge, organizer, event_id)
    wait_for(lambda: cancelled_in_ledger(mesh, event_id) >= 4, "the first refunds", every=0.02)
    mesh.stop("booking", signal.SIGKILL)
    at_kill = cancelled_in_ledger(mesh, event_id)
    assert at_kill < len(bookings), "the refunds were all done before the kill; nothing tested"
    restart(mesh, SLOW_REFUNDS)
    done = wait_for(lambda: finished(edge, event_id), "the refunds after the restart", timeout=120)
    assert done["cancellation"]["bookings_refunded"] == done["cancellation"]["bookings_total"] == 30
    assert_all_refunded_once(edge, mesh, mail_sink, event_id, bookings, tokens)


def test_a_mass_refund_waits_for_the_payment_service(
    edge: Edge, mesh: Mesh, mail_sink: MailSink, organizer: str, keys_dir: Path, slow_refunds: None
) -> None:
    event = edge.post("/v1/events", event_body(title="Payment away"), token=organizer).body
    event_id = event["event_id"]
    tokens = buyers(keys_dir, 6)
    bookings = book_seats(edge, tokens, event_id)
    mesh.stop("payment")
    try:
        cancel(edge, organizer, event_id)
        with psycopg.connect(libpq_url(mesh.env["BOOKING_DATABASE_URL"])) as conn:
            # The refunds are taken up (each retried through the saga's window) ...
            wait_for(
                lambda: (
                    conn.execute(
                        "SELECT count(*) FROM bookings WHERE event_id = %s "
                        "AND cancel_requested_time IS NOT NULL",
                        (event_id,),
                    ).fetchone()[0]
                    >= 1
                ),
                "the refunds to be tried",
            )
        # ... and none goes through while payment is away.
        assert cancelled_in_ledger(mesh, event_id) == 0
    finally:
        mesh.start_service("payment")
        wait_for(
            lambda: envoy_clusters_healthy(int(mesh.env["EDGE_ADMIN_PORT"]), ["payment"]),
            "Envoy to see payment again",
        )
    done = wait_for(lambda: finished(edge, event_id), "the refunds once payment is back", 90)
    assert done["cancellation"]["bookings_refunded"] == 6
    assert_all_refunded_once(edge, mesh, mail_sink, event_id, bookings, tokens)


def test_a_mass_refund_goes_on_through_a_broker_outage(
    edge: Edge, mesh: Mesh, mail_sink: MailSink, organizer: str, keys_dir: Path, slow_refunds: None
) -> None:
    event = edge.post("/v1/events", event_body(title="Broker away"), token=organizer).body
    event_id = event["event_id"]
    tokens = buyers(keys_dir, 12)
    bookings = book_seats(edge, tokens, event_id)
    # The booking service's RabbitMQ connection (its consumer and its outbox
    # relay) through a fault proxy, on an address of its own.
    mesh.stop("booking")
    proxy = FaultProxy(("127.0.0.1", 5672)).start()
    vhost = mesh.env["AMQP_URL"].rsplit("/", 1)[1]
    mesh.start_service(
        "booking",
        name="booking-broker-proxy",
        env={
            **SLOW_REFUNDS,
            "BOOKING_GRPC_ADDR": f"127.0.0.1:{free_port()}",
            "AMQP_URL": f"amqp://guest:guest@{proxy.address}/{vhost}",
        },
    )
    try:
        cancel(edge, organizer, event_id)
        wait_for(lambda: cancelled_in_ledger(mesh, event_id) >= 2, "the first refunds", every=0.02)
        proxy.cut()
        wait_for(
            lambda: cancelled_in_ledger(mesh, event_id) == 12, "the refunds, broker or not", 60
        )
        with psycopg.connect(libpq_url(mesh.env["BOOKING_DATABASE_URL"])) as conn:
            [(held,)] = conn.execute(
                "SELECT count(*) FROM outbox WHERE sent_time IS NULL AND routing_key = %s",
                ("booking.cancelled",),
            ).fetchall()
        assert held > 0, "the cancellations wait in the outbox"
        assert finished(edge, event_id) is None
        proxy.restore()
        done = wait_for(lambda: finished(edge, event_id), "the reports once the broker is back")
        assert done["cancellation"]["bookings_refunded"] == 12
    finally:
        mesh.stop("booking-broker-proxy")
        proxy.close()
        restart(mesh, SLOW_REFUNDS)
    assert_all_refunded_once(edge, mesh, mail_sink, event_id, bookings, tokens)


def test_bad_cancellations_are_4xx(edge: Edge, organizer: str, keys_dir: Path) -> None:
    event = edge.post("/v1/events", event_body(), token=organizer).body
    path = f"/v1/events/{event['event_id']}:cancel"
    rival = mint_token(keys_dir, role="organizer")
    assert_error(edge.post(path, {}, token=rival), 403)
    assert_error(edge.post(path, {}, token=mint_token(keys_dir)), 403)
    assert_error(edge.post(path, {}), 401)
    assert_error(edge.post(f"/v1/events/{uuid.uuid4()}:cancel", {}, token=organizer), 404)
    too_long = edge.post(path, {"reason": "x" * 501}, token=organizer)
    assert_error(too_long, 400)
    assert set(too_long.violations) == {"reason"}
    stale = edge.post(path, {"etag": '"0"'}, token=organizer)
    assert_error(stale, 409)
    assert stale.reason == "ETAG_MISMATCH"
    assert edge.get(f"/v1/events/{event['event_id']}").body["state"] == "EVENT_STATE_PUBLISHED"

    cancel(edge, organizer, event["event_id"])
    edit = edge.call(
        "PATCH",
        f"/v1/events/{event['event_id']}?update_mask=title",
        {"title": "x"},
        token=organizer,
    )
    assert_error(edit, 400)
    assert edit.reason == "EVENT_CANCELLED"
    publish = edge.post(f"/v1/events/{event['event_id']}:publish", {}, token=organizer)
    assert_error(publish, 400)
    assert publish.reason == "EVENT_CANCELLED"

    soon = edge.post("/v1/events", event_body(starts_in=timedelta(seconds=2)), token=organizer).body
    wait_for(
        lambda: datetime.now(UTC) > datetime.fromisoformat(soon["starts_at"]), "the event to start"
    )
    started = edge.post(f"/v1/events/{soon['event_id']}:cancel", {}, token=organizer)
    assert_error(started, 400)
    assert started.reason == "EVENT_STARTED"


def test_a_cancelled_event_is_listed_by_state(edge: Edge, organizer: str) -> None:
    event = edge.post("/v1/events", event_body(title="Listed cancelled"), token=organizer).body
    cancel(edge, organizer, event["event_id"])
    found = edge.get(
        "/v1/events?state=EVENT_STATE_CANCELLED&query=Listed%20cancelled&page_size=100"
    )
    assert event["event_id"] in [e["event_id"] for e in found.body["events"]]
