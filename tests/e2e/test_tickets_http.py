"""Tickets on demand and check-in at the door, through Envoy: a token per seat
that verifies offline against the published ticket keys, the PDF as
application/pdf, and each ticket admitted exactly once."""

from __future__ import annotations

import io
import json
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jwt
import psycopg
import pytest
import zxingcpp
from PIL import Image
from pypdf import PdfReader

from runtime.db import libpq_url
from scripts.mail_sink import MailSink
from scripts.mesh import Mesh
from tests.e2e.test_auth_http import assert_error
from tests.e2e.test_messaging import drained, publish
from tests.support import (
    Edge,
    book,
    error_reason_metadata,
    event_body,
    mint_token,
    register_and_login,
    wait_for,
)
from ticketing.booking.v1 import messages_pb2


@pytest.fixture
def event(edge: Edge, organizer: str) -> dict:
    reply = edge.post("/v1/events", event_body(title="Door night"), token=organizer)
    assert reply.status == 200, reply.body
    return reply.body


def fetch(edge: Edge, path: str, token: str) -> tuple[int, str, bytes]:
    request = urllib.request.Request(edge.base_url + path)
    request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.headers["content-type"], reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["content-type"], error.read()


def offline_verify(jwks: dict, token: str) -> dict:
    """What a gate scanner does without the network: the token's kid picks a
    published key, and the signature and issuer must hold."""
    kid = jwt.get_unverified_header(token)["kid"]
    [key] = [k for k in jwks["keys"] if k["kid"] == kid]
    public = jwt.PyJWK.from_dict(key).key
    return jwt.decode(token, public, algorithms=["ES256"], issuer="ticketing-tickets")


def test_tickets_on_demand_verify_offline_and_print_as_pdf(
    edge: Edge, event: dict, keys_dir: Path
) -> None:
    buyer = register_and_login(edge, "ticketed")
    booking = book(edge, buyer.access_token, event["event_id"], ["vip-1-1", "standard-1-3"]).body
    path = f"/v1/bookings/{booking['booking_id']}/tickets"

    listed = edge.get(path, token=buyer.access_token)
    assert listed.status == 200, listed.body
    tickets = listed.body["tickets"]
    assert [t["seat_id"] for t in tickets] == ["vip-1-1", "standard-1-3"]

    jwks = edge.get("/v1/tickets/jwks")  # public: a scanner fetches it once
    assert jwks.status == 200 and jwks.body["keys"], jwks.body
    assert all(k["kty"] == "EC" and k["alg"] == "ES256" for k in jwks.body["keys"])
    for ticket in tickets:
        claims = offline_verify(jwks.body, ticket["ticket_token"])
        assert claims["sub"] == booking["booking_id"]
        assert claims["event_id"] == event["event_id"]
        assert claims["seat_id"] == ticket["seat_id"]
        assert claims["holder"] == buyer.email

    status, content_type, pdf_bytes = fetch(edge, path + ".pdf", buyer.access_token)
    assert status == 200 and content_type == "application/pdf"
    pdf = PdfReader(io.BytesIO(pdf_bytes), strict=True)
    assert len(pdf.pages) == 2
    for page, seat in zip(pdf.pages, ["vip-1-1", "standard-1-3"], strict=True):
        assert seat in page.extract_text()
        [image] = page.images
        qr = Image.open(io.BytesIO(image.data))
        [code] = zxingcpp.read_barcodes(qr.resize((qr.width * 4, qr.height * 4), Image.NEAREST))
        assert offline_verify(jwks.body, code.text)["seat_id"] == seat

    # Owner or admin only; anyone else is told there is no such booking.
    stranger = register_and_login(edge, "stranger")
    assert_error(edge.get(path, token=stranger.access_token), 404)
    status, content_type, body = fetch(edge, path + ".pdf", stranger.access_token)
    assert status == 404 and content_type.startswith("application/json"), body
    assert edge.get(path, token=mint_token(keys_dir, role="admin")).status == 200
    assert_error(edge.get(path), 401)
    assert_error(edge.get("/v1/bookings/not-a-uuid/tickets", token=buyer.access_token), 400)

    # A cancelled booking has no tickets to hand out.
    edge.post(f"/v1/bookings/{booking['booking_id']}:cancel", token=buyer.access_token)
    gone = edge.get(path, token=buyer.access_token)
    assert_error(gone, 400)
    assert gone.reason == "BOOKING_NOT_CONFIRMED"


def check_in(edge: Edge, token: str, ticket: str, event_id: str = "") -> dict:
    body = {"ticket_token": ticket, **({"event_id": event_id} if event_id else {})}
    return edge.post("/v1/tickets:checkIn", body, token=token)


def test_a_ticket_checks_in_once_and_refusals_say_why(
    edge: Edge, event: dict, organizer: str, keys_dir: Path
) -> None:
    buyer = register_and_login(edge, "door")
    booking = book(edge, buyer.access_token, event["event_id"], ["vip-2-1", "vip-2-2"]).body
    tickets = edge.get(
        f"/v1/bookings/{booking['booking_id']}/tickets", token=buyer.access_token
    ).body["tickets"]
    first = tickets[0]["ticket_token"]

    # Only organizers and admins scan; a buyer cannot admit themselves.
    assert_error(check_in(edge, buyer.access_token, first), 403)
    # Another organizer's gate, or a gate of another event, does not take it.
    other = mint_token(keys_dir, role="organizer")
    refused = check_in(edge, other, first)
    assert_error(refused, 400)
    assert refused.reason == "TICKET_INVALID"
    elsewhere = check_in(edge, organizer, first, str(uuid.uuid4()))
    assert elsewhere.status == 400 and elsewhere.reason == "TICKET_INVALID"

    admitted = check_in(edge, organizer, first, event["event_id"])
    assert admitted.status == 200, admitted.body
    assert admitted.body["seat_id"] == "vip-2-1"
    assert admitted.body["booking_id"] == booking["booking_id"]
    assert admitted.body["event_id"] == event["event_id"]

    again = check_in(edge, mint_token(keys_dir, role="admin"), first)
    assert_error(again, 409)
    assert again.reason == "ALREADY_CHECKED_IN"
    first_time = error_reason_metadata(again)["check_in_time"]
    assert first_time.replace("+00:00", "Z").startswith(admitted.body["check_in_time"][:19])

    # Forged and tampered tokens.
    header, payload, signature = tickets[1]["ticket_token"].split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["seat_id"] = "vip-1-5"
    tampered = ".".join(
        [header, jwt.utils.base64url_encode(json.dumps(claims).encode()).decode(), signature]
    )
    forged = mint_token(keys_dir, iss="ticketing-tickets", event_id=event["event_id"])
    for bad in (tampered, forged, "garbage"):
        reply = check_in(edge, organizer, bad)
        assert reply.status == 400 and reply.reason == "TICKET_INVALID", reply.body
    assert check_in(edge, organizer, "").reason != "TICKET_INVALID"  # just bad input

    # The second seat, once its booking is cancelled, is void.
    edge.post(f"/v1/bookings/{booking['booking_id']}:cancel", token=buyer.access_token)
    void = check_in(edge, organizer, tickets[1]["ticket_token"])
    assert void.status == 400 and void.reason == "TICKET_VOID", void.body


def test_concurrent_scans_of_one_ticket_admit_it_once(
    edge: Edge, event: dict, organizer: str
) -> None:
    buyer = register_and_login(edge, "rush")
    booking = book(edge, buyer.access_token, event["event_id"], ["standard-4-10"]).body
    [ticket] = edge.get(
        f"/v1/bookings/{booking['booking_id']}/tickets", token=buyer.access_token
    ).body["tickets"]
    with ThreadPoolExecutor(16) as pool:
        replies = list(
            pool.map(lambda _: check_in(edge, organizer, ticket["ticket_token"]), range(16))
        )
    statuses = sorted(r.status for r in replies)
    assert statuses == [200] + [409] * 15, [(r.status, r.body) for r in replies]
    [winner] = [r for r in replies if r.status == 200]
    times = {error_reason_metadata(r)["check_in_time"] for r in replies if r.status == 409}
    assert len(times) == 1  # every later scan names the one admission
    assert times.pop().replace("+00:00", "Z")[:19] == winner.body["check_in_time"][:19]


def checked_in_message(mesh: Mesh, booking_id: str, seat_id: str) -> tuple[bytes, str, str]:
    """The TicketCheckedIn a scan wrote to booking's outbox: (payload, type, id)."""
    with psycopg.connect(libpq_url(mesh.env["BOOKING_DATABASE_URL"])) as conn:
        rows = conn.execute(
            "SELECT payload, message_type, message_id FROM outbox "
            "WHERE routing_key = 'booking.checked_in' ORDER BY create_time DESC LIMIT 50"
        ).fetchall()
    found = [
        (bytes(payload), kind, str(message_id))
        for payload, kind, message_id in rows
        if (m := messages_pb2.TicketCheckedIn.FromString(payload)).booking_id == booking_id
        and m.seat.seat_id == seat_id
    ]
    assert len(found) == 1, found  # a second scan announces nothing
    return found[0]


def test_the_sales_report_and_seat_map_count_check_ins_and_holds_per_tier(
    edge: Edge, event: dict, organizer: str, mesh: Mesh, mail_sink: MailSink
) -> None:
    event_id = event["event_id"]
    buyer = register_and_login(edge, "counted")
    booking = book(edge, buyer.access_token, event_id, ["vip-1-3", "vip-1-4", "standard-2-1"])
    tickets = {
        t["seat_id"]: t["ticket_token"]
        for t in edge.get(
            f"/v1/bookings/{booking.body['booking_id']}/tickets", token=buyer.access_token
        ).body["tickets"]
    }
    holder = register_and_login(edge, "holding")
    held = edge.post(
        f"/v1/events/{event_id}/holds",
        {"seat_ids": ["standard-3-1", "standard-3-2"]},
        token=holder.access_token,
    )
    assert held.status == 200, held.body
    assert check_in(edge, organizer, tickets["vip-1-3"]).status == 200
    assert check_in(edge, organizer, tickets["vip-1-3"]).reason == "ALREADY_CHECKED_IN"
    assert check_in(edge, organizer, tickets["standard-2-1"]).status == 200

    sales = f"/v1/events/{event_id}/sales"

    def per_tier(report: dict) -> dict[str, tuple[int, int, int]]:
        return {
            t["tier"]: (t["tickets_sold"], t["tickets_held"], t["tickets_checked_in"])
            for t in report["tiers"]
        }

    expected = {"TIER_STANDARD": (1, 2, 1), "TIER_VIP": (2, 0, 1)}
    report = wait_for(
        lambda: per_tier(r := edge.get(sales, token=organizer).body) == expected and r,
        "the check-ins in the sales report",
    )
    assert (report["tickets_sold"], report["tickets_held"], report["tickets_checked_in"]) == (
        3,
        2,
        2,
    )
    seat_map = wait_for(
        lambda: (
            {
                t["tier"]: (t["sold"], t["held"], t["checked_in"])
                for t in edge.get(f"/v1/events/{event_id}").body["tiers"]
            }
            == expected
        ),
        "the check-ins on the seat map",
    )
    assert seat_map

    # The broker delivering the check-in again (at-least-once) counts it once.
    publish(
        mesh, "booking.checked_in", *checked_in_message(mesh, booking.body["booking_id"], "vip-1-3")
    )
    drained(mesh, mail_sink)
    assert per_tier(edge.get(sales, token=organizer).body) == expected
