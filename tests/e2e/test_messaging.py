"""Completion events end to end: outbox -> RabbitMQ -> both subscribers (the
notification service's emails, the event service's sales report), with the
broker, the mail server and the notification process failing on the way."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import jwt
import pika
import psycopg
import pytest
import zxingcpp
from google.protobuf import json_format
from PIL import Image
from pypdf import PdfReader

from notification.domain import State
from runtime.db import libpq_url
from runtime.signing import KeyRing
from scripts.mail_sink import MailSink
from scripts.mesh import Mesh, free_port
from tests.e2e.test_auth_http import assert_error
from tests.faultproxy import FaultProxy
from tests.support import (
    Edge,
    bearer,
    book,
    card,
    event_body,
    mint_token,
    register_and_login,
    wait_for,
)
from ticketing.auth.v1 import messages_pb2 as auth_messages
from ticketing.booking.v1 import booking_pb2, booking_pb2_grpc, messages_pb2
from ticketing.common.v1 import money_pb2
from ticketing.event.v1 import event_pb2
from ticketing.payment.v1 import payment_pb2

USD_1 = money_pb2.Money(currency_code="USD", amount_minor=100)


def emails_about(
    sink: MailSink, booking_id: str, kind: str = "BOOKING_CONFIRMED"
) -> list[EmailMessage]:
    return [
        m
        for m in sink.messages
        if m["X-Ticketing-Kind"] == kind and booking_id in m.get_body(("plain",)).get_content()
    ]


CONFIRMED = "ticketing.booking.v1.BookingConfirmed"


def a_confirmation(who: str) -> messages_pb2.BookingConfirmed:
    """A BookingConfirmed of a booking no service holds, for a new address."""
    return messages_pb2.BookingConfirmed(
        booking=booking_pb2.Booking(
            booking_id=str(uuid.uuid4()),
            user_id=str(uuid.uuid4()),
            event_id=str(uuid.uuid4()),
            seats=[booking_pb2.BookedSeat(seat_id="standard-1-1", tier=1, price=USD_1)],
            total=USD_1,
            state=booking_pb2.BOOKING_STATE_CONFIRMED,
        ),
        user_email=f"{who}-{uuid.uuid4().hex[:8]}@example.com",
        event=event_pb2.EventSummary(title="Sentinel", venue="Nowhere"),
    )


def drained(mesh: Mesh, sink: MailSink) -> None:
    """Returns once everything published so far has been handled by both
    subscribers, so a duplicate, if one were coming, has arrived: the booking
    outbox is empty, and a sentinel message published after it all has reached
    the end of both queues (its email sent, its sale counted)."""
    with psycopg.connect(libpq_url(mesh.env["BOOKING_DATABASE_URL"])) as conn:
        wait_for(
            lambda: (
                conn.execute("SELECT count(*) FROM outbox WHERE sent_time IS NULL").fetchone()
                == (0,)
            ),
            "the booking outbox to be published",
        )
    sentinel = a_confirmation("sentinel")
    publish(mesh, "booking.confirmed", sentinel.SerializeToString(), CONFIRMED, str(uuid.uuid4()))
    wait_for(
        lambda: any(m["To"] == sentinel.user_email for m in sink.messages),
        "the sentinel's email",
    )
    with psycopg.connect(libpq_url(mesh.env["EVENT_DATABASE_URL"])) as conn:
        wait_for(
            lambda: conn.execute(
                "SELECT 1 FROM sales WHERE event_id = %s", (sentinel.booking.event_id,)
            ).fetchone(),
            "the sentinel's sale in the report",
        )


@pytest.fixture
def event(edge: Edge, organizer: str) -> dict:
    reply = edge.post("/v1/events", event_body(title="Messaging gala"), token=organizer)
    assert reply.status == 200, reply.body
    return reply.body


def decode_ticket(email: EmailMessage) -> tuple[str, PdfReader]:
    [attachment] = list(email.iter_attachments())
    assert attachment.get_content_type() == "application/pdf"
    pdf = PdfReader(io.BytesIO(attachment.get_content()))
    [image] = pdf.pages[0].images
    qr = Image.open(io.BytesIO(image.data))
    # One pixel per module in the file; a viewer (or a scanner's camera) sees it large.
    [code] = zxingcpp.read_barcodes(qr.resize((qr.width * 4, qr.height * 4), Image.NEAREST))
    assert code.format == zxingcpp.BarcodeFormat.QRCode
    return code.text, pdf


def test_a_confirmation_reaches_both_subscribers_once(
    edge: Edge,
    event: dict,
    mail_sink: MailSink,
    mesh: Mesh,
    organizer: str,
) -> None:
    buyer = register_and_login(edge, "mailme")
    booking = book(
        edge, buyer.access_token, event["event_id"], ["vip-1-1", "standard-1-1", "standard-1-2"]
    ).body
    booking_id = booking["booking_id"]
    [email] = wait_for(lambda: emails_about(mail_sink, booking_id), "the confirmation email")
    assert email["To"] == buyer.email
    assert email["Subject"] == "Your tickets for Messaging gala"
    text = email.get_body(("plain",)).get_content()
    for expected in ("vip-1-1", "standard-1-1", "standard-1-2", "Total paid: 250.00 USD"):
        assert expected in text

    token, pdf = decode_ticket(email)
    assert booking_id in pdf.pages[0].extract_text()
    ticket_keys = KeyRing(Path(mesh.env["TICKET_KEYS_DIR"]))
    kid = jwt.get_unverified_header(token)["kid"]
    claims = jwt.decode(token, ticket_keys.public_key(kid), algorithms=["ES256"])
    assert claims["sub"] == booking_id
    assert claims["seat_id"] == "vip-1-1"  # the first seat's page; a page per seat
    assert len(pdf.pages) == 3
    assert claims["holder"] == buyer.email

    report = wait_for(
        lambda: (
            (r := edge.get(f"/v1/events/{event['event_id']}/sales", token=organizer)).body.get(
                "tickets_sold"
            )
            == 3
            and r
        ),
        "the sales report",
    )
    sales = {
        t["tier"]: (t["tickets_sold"], t["gross"]["amount_minor"]) for t in report.body["tiers"]
    }
    assert sales == {"TIER_STANDARD": (2, "10000"), "TIER_VIP": (1, "15000")}

    # The same message delivered again (at-least-once) is acted on once by both.
    republish_outbox_message(mesh, booking_id)
    drained(mesh, mail_sink)
    assert len(emails_about(mail_sink, booking_id)) == 1
    again = edge.get(f"/v1/events/{event['event_id']}/sales", token=organizer).body
    assert again["tickets_sold"] == 3 and again["gross"]["amount_minor"] == "25000"

    listed = edge.get("/v1/notifications", token=buyer.access_token).body["notifications"]
    kinds = {n["kind"]: n["state"] for n in listed}
    assert kinds["NOTIFICATION_KIND_BOOKING_CONFIRMED"] == "NOTIFICATION_STATE_SENT"
    assert kinds["NOTIFICATION_KIND_WELCOME"] == "NOTIFICATION_STATE_SENT"
    assert {n["user_id"] for n in listed} == {buyer.user_id}
    # Each says what it is about: the confirmation its booking and event, the
    # welcome nothing.
    about = {n["kind"]: (n["booking_id"], n["event_id"]) for n in listed}
    assert about["NOTIFICATION_KIND_BOOKING_CONFIRMED"] == (booking_id, event["event_id"])
    assert about["NOTIFICATION_KIND_WELCOME"] == ("", "")


def test_sales_are_for_the_organizer_and_admins(edge: Edge, event: dict, keys_dir: Path) -> None:
    path = f"/v1/events/{event['event_id']}/sales"
    assert_error(edge.get(path, token=mint_token(keys_dir, role="organizer")), 403)
    assert_error(edge.get(path, token=mint_token(keys_dir)), 403)
    assert_error(edge.get(path), 401)
    assert edge.get(path, token=mint_token(keys_dir, role="admin")).status == 200


def test_cancellation_and_failure_emails(
    edge: Edge,
    event: dict,
    mail_sink: MailSink,
    organizer: str,
) -> None:
    buyer = register_and_login(edge, "changes")
    booking = book(edge, buyer.access_token, event["event_id"], ["vip-2-2"]).body
    edge.post(f"/v1/bookings/{booking['booking_id']}:cancel", token=buyer.access_token)
    [cancelled] = wait_for(
        lambda: emails_about(mail_sink, booking["booking_id"], "BOOKING_CANCELLED"),
        "the cancellation email",
    )
    assert "Refunded: 150.00 USD" in cancelled.get_body(("plain",)).get_content()
    declined = book(edge, buyer.access_token, event["event_id"], ["vip-2-3"], "4000000000000002")
    failed_id = declined.body["details"][0]["metadata"]["booking_id"]
    [failed] = wait_for(
        lambda: emails_about(mail_sink, failed_id, "BOOKING_FAILED"), "the failure email"
    )
    assert "card_declined" in failed.get_body(("plain",)).get_content()
    listed = edge.get("/v1/notifications", token=buyer.access_token).body["notifications"]
    about = {(n["kind"], n["booking_id"], n["event_id"]) for n in listed}
    assert {
        ("NOTIFICATION_KIND_BOOKING_CANCELLED", booking["booking_id"], event["event_id"]),
        ("NOTIFICATION_KIND_BOOKING_FAILED", failed_id, event["event_id"]),
    } <= about
    report = wait_for(
        lambda: (
            (r := edge.get(f"/v1/events/{event['event_id']}/sales", token=organizer).body)["tiers"]
            and r["refunded"]["amount_minor"] == "15000"
            and r
        ),
        "the refund in sales",
    )
    assert report["tickets_sold"] == 0 and report["net"]["amount_minor"] == "0"


def test_a_booking_cancelled_with_its_event_is_an_event_cancelled_email(
    edge: Edge, mesh: Mesh, mail_sink: MailSink, keys_dir: Path
) -> None:
    """The message the event's cancellation has booking publish per refunded
    booking: the holder is told the event is off, why, and what came back."""
    holder_id, event_id, booking_id = (str(uuid.uuid4()) for _ in range(3))
    seat = booking_pb2.BookedSeat(seat_id="vip-1-1", tier=2, price=USD_1)
    cancelled = messages_pb2.BookingCancelled(
        booking=booking_pb2.Booking(
            booking_id=booking_id,
            user_id=holder_id,
            event_id=event_id,
            seats=[seat],
            total=USD_1,
            state=booking_pb2.BOOKING_STATE_CANCELLED,
        ),
        user_email=f"holder-{uuid.uuid4().hex[:8]}@example.com",
        event=event_pb2.EventSummary(event_id=event_id, title="Open air", venue="Park"),
        refunded_amount=USD_1,
        event_cancelled=True,
        event_cancellation_reason="storm warning",
    )
    publish(
        mesh,
        "booking.cancelled",
        cancelled.SerializeToString(),
        "ticketing.booking.v1.BookingCancelled",
        str(uuid.uuid4()),
    )
    [email] = wait_for(
        lambda: emails_about(mail_sink, booking_id, "EVENT_CANCELLED"), "the event-cancelled email"
    )
    assert email["To"] == cancelled.user_email
    assert email["Subject"] == "Open air is cancelled; your tickets are refunded"
    text = email.get_body(("plain",)).get_content()
    assert "Reason: storm warning" in text and "Refunded: 1.00 USD" in text
    holder = mint_token(keys_dir, user_id=holder_id, email=cancelled.user_email)
    [listed] = edge.get("/v1/notifications", token=holder).body["notifications"]
    assert (listed["kind"], listed["booking_id"], listed["event_id"]) == (
        "NOTIFICATION_KIND_EVENT_CANCELLED",
        booking_id,
        event_id,
    )


def confirmation_payload(mesh: Mesh, booking_id: str) -> bytes:
    with psycopg.connect(libpq_url(mesh.env["BOOKING_DATABASE_URL"])) as conn:
        [(payload,)] = conn.execute(
            "SELECT payload FROM outbox WHERE routing_key = 'booking.confirmed' "
            "AND message_type = 'ticketing.booking.v1.BookingConfirmed' AND payload IS NOT NULL "
            "ORDER BY create_time DESC LIMIT 1"
        ).fetchall()
    found = messages_pb2.BookingConfirmed.FromString(payload)
    assert found.booking.booking_id == booking_id
    return bytes(payload)


def republish_outbox_message(mesh: Mesh, booking_id: str) -> None:
    """Sends a booking's BookingConfirmed again, same message_id, as a broker might."""
    with psycopg.connect(libpq_url(mesh.env["BOOKING_DATABASE_URL"])) as conn:
        rows = conn.execute(
            "SELECT message_id, message_type, payload FROM outbox "
            "WHERE routing_key = 'booking.confirmed' ORDER BY create_time DESC LIMIT 50"
        ).fetchall()
    message_id, message_type, payload = next(
        r
        for r in rows
        if messages_pb2.BookingConfirmed.FromString(r[2]).booking.booking_id == booking_id
    )
    publish(mesh, "booking.confirmed", bytes(payload), message_type, str(message_id))


def publish(
    mesh: Mesh, routing_key: str, body: bytes, message_type: str, message_id: str | None
) -> None:
    publish_burst(mesh, [(routing_key, body, message_type, message_id)])


def publish_burst(mesh: Mesh, messages: list[tuple[str, bytes, str, str | None]]) -> None:
    """Publishes (routing key, body, type, message id) back to back on one
    channel, so consumers likely get them as one batch; each confirmed by the
    broker, since a message still in flight when the connection closes may be
    lost."""
    connection = pika.BlockingConnection(pika.URLParameters(mesh.env["AMQP_URL"]))
    channel = connection.channel()
    channel.confirm_delivery()
    for routing_key, body, message_type, message_id in messages:
        channel.basic_publish(
            "ticketing.events",
            routing_key,
            body,
            pika.BasicProperties(
                message_id=message_id,
                type=message_type,
                delivery_mode=2,
                content_type="application/x-protobuf",
            ),
            mandatory=True,
        )
    connection.close()


def dead_lettered(mesh: Mesh, queue: str, wanted: set[str]) -> Callable[[], bool]:
    """A check for wait_for: whether every message id in `wanted` has reached
    `queue`'s dead-letter queue. Each look takes what is there off the queue
    (acked), so no message is handed back and forth between looks (a message
    returned unacked may be out of sight of the next look for a while)."""
    seen: set[str] = set()

    def check() -> bool:
        connection = pika.BlockingConnection(pika.URLParameters(mesh.env["AMQP_URL"]))
        try:
            channel = connection.channel()
            while True:
                method, properties, _ = channel.basic_get(f"{queue}.dead", auto_ack=True)
                if method is None:
                    break
                seen.add(properties.message_id)
        finally:
            connection.close()
        return wanted <= seen

    return check


def test_a_burst_is_counted_once_per_message_with_its_poison_dead_lettered(
    edge: Edge, event: dict, mesh: Mesh, organizer: str, mail_sink: MailSink
) -> None:
    buyer = register_and_login(edge, "burst")
    booking = book(edge, buyer.access_token, event["event_id"], ["vip-2-2", "standard-4-5"]).body
    sales = f"/v1/events/{event['event_id']}/sales"
    wait_for(lambda: edge.get(sales, token=organizer).body.get("tickets_sold") == 2, "the sale")
    payload = confirmation_payload(mesh, booking["booking_id"])
    fresh = [str(uuid.uuid4()) for _ in range(10)]
    garbled = str(uuid.uuid4())
    burst = [(payload, m) for m in fresh]
    burst += [(payload, fresh[0]), (b"\xff not protobuf", garbled)]
    burst += [(payload, m) for m in fresh[5:]]  # redelivered within the burst
    publish_burst(mesh, [("booking.confirmed", body, CONFIRMED, m) for body, m in burst])
    # Each fresh message id counts its two seats once, however the burst was batched.
    wait_for(dead_lettered(mesh, "event.sales", {garbled}), "the poison dead-lettered")
    report = wait_for(
        lambda: (r := edge.get(sales, token=organizer).body).get("tickets_sold") == 22 and r,
        "the burst counted",
    )
    drained(mesh, mail_sink)
    assert edge.get(sales, token=organizer).body == report
    assert report["gross"]["amount_minor"] == str(11 * 20000)


def test_a_batch_with_an_account_deletion_and_poison_in_it(mesh: Mesh, mail_sink: MailSink) -> None:
    """A burst the notification service likely takes as one batch: what a
    user.deleted in it follows or precedes is erased either way, the other
    account's messages are recorded once per message id, and the poison among
    them is dead-lettered alone."""
    leaving, staying = a_confirmation("leaving"), a_confirmation("staying")
    deleted = auth_messages.UserDeleted(user_id=leaving.booking.user_id).SerializeToString()
    staying_ids, garbled = [str(uuid.uuid4()), str(uuid.uuid4())], str(uuid.uuid4())
    publish_burst(
        mesh,
        [
            ("booking.confirmed", leaving.SerializeToString(), CONFIRMED, str(uuid.uuid4())),
            ("booking.confirmed", staying.SerializeToString(), CONFIRMED, staying_ids[0]),
            ("user.deleted", deleted, "ticketing.auth.v1.UserDeleted", str(uuid.uuid4())),
            ("booking.confirmed", b"\xff not protobuf", CONFIRMED, garbled),
            ("booking.confirmed", leaving.SerializeToString(), CONFIRMED, str(uuid.uuid4())),
            ("booking.confirmed", staying.SerializeToString(), CONFIRMED, staying_ids[1]),
            ("booking.confirmed", staying.SerializeToString(), CONFIRMED, staying_ids[0]),
        ],
    )
    wait_for(dead_lettered(mesh, "notification", {garbled}), "the poison dead-lettered")
    drained(mesh, mail_sink)
    assert [m["To"] for m in mail_sink.messages].count(staying.user_email) == 2
    with psycopg.connect(libpq_url(mesh.env["NOTIFICATION_DATABASE_URL"])) as conn:
        erased = conn.execute(
            "SELECT recipient, payload, state FROM notifications WHERE user_id = %s",
            (leaving.booking.user_id,),
        ).fetchall()
    # The first may have been sent before the deletion came: erased all the same.
    assert [(recipient, bytes(payload)) for recipient, payload, _ in erased] == [("", b"")] * 2
    assert State.PENDING.value not in {state for _, _, state in erased}


def test_poison_messages_are_dead_lettered_and_consumers_go_on(
    edge: Edge,
    event: dict,
    mail_sink: MailSink,
    mesh: Mesh,
) -> None:
    garbled, unknown = str(uuid.uuid4()), str(uuid.uuid4())
    publish(
        mesh,
        "booking.confirmed",
        b"\xff\xff\xff\xff not protobuf",
        "ticketing.booking.v1.BookingConfirmed",
        garbled,
    )
    publish(mesh, "booking.confirmed", b"", "ticketing.booking.v1.SomethingElse", unknown)
    for queue in ("notification", "event.sales"):
        wait_for(
            dead_lettered(mesh, queue, {garbled, unknown}),
            f"both poison messages in {queue}.dead",
        )
    buyer = register_and_login(edge, "afterpoison")
    booking = book(edge, buyer.access_token, event["event_id"], ["standard-4-4"]).body
    wait_for(lambda: emails_about(mail_sink, booking["booking_id"]), "an email after the poison")


def test_mail_server_outage_delays_but_loses_nothing(
    edge: Edge,
    event: dict,
    mail_sink: MailSink,
) -> None:
    buyer = register_and_login(edge, "patient")
    mail_sink.stop()
    try:
        booking = book(edge, buyer.access_token, event["event_id"], ["standard-3-3"]).body
        pending = wait_for(
            lambda: [
                n
                for n in edge.get("/v1/notifications", token=buyer.access_token).body[
                    "notifications"
                ]
                if n["kind"] == "NOTIFICATION_KIND_BOOKING_CONFIRMED" and n["attempts"] >= 1
            ],
            "a failed delivery attempt",
        )
        assert pending[0]["state"] == "NOTIFICATION_STATE_PENDING"
    finally:
        mail_sink.start()
    wait_for(lambda: emails_about(mail_sink, booking["booking_id"]), "the delayed email", 60)
    # Marked sent, so no later attempt can send it again.
    wait_for(
        lambda: all(
            n["state"] == "NOTIFICATION_STATE_SENT"
            for n in edge.get("/v1/notifications", token=buyer.access_token).body["notifications"]
        ),
        "the email marked sent",
    )
    assert len(emails_about(mail_sink, booking["booking_id"])) == 1


@pytest.fixture
def booking_via_broker_proxy(mesh: Mesh) -> Iterator[tuple[str, FaultProxy]]:
    """The booking service with its RabbitMQ connection through a fault proxy (the
    usual instance stops meanwhile: its outbox relay would publish for both)."""
    mesh.stop("booking")
    proxy = FaultProxy(("127.0.0.1", 5672)).start()
    addr = f"127.0.0.1:{free_port()}"
    vhost = mesh.env["AMQP_URL"].rsplit("/", 1)[1]
    mesh.start_service(
        "booking",
        name="booking-broker-proxy",
        env={"BOOKING_GRPC_ADDR": addr, "AMQP_URL": f"amqp://guest:guest@{proxy.address}/{vhost}"},
    )
    try:
        yield addr, proxy
    finally:
        mesh.stop("booking-broker-proxy")
        proxy.close()
        mesh.start_service("booking")


def test_confirmations_survive_a_broker_outage(
    mesh: Mesh,
    edge: Edge,
    event: dict,
    mail_sink: MailSink,
    keys_dir: Path,
    booking_via_broker_proxy: tuple[str, FaultProxy],
) -> None:
    addr, proxy = booking_via_broker_proxy
    proxy.cut()
    booking_ids = []
    with mesh.channel("booking", addr=addr) as channel:
        stub = booking_pb2_grpc.BookingServiceStub(channel)
        token = mint_token(keys_dir, email="outage@example.com")
        for seat in [f"standard-{row}-{n}" for row in (1, 2) for n in range(1, 11)]:
            booking = stub.CreateBooking(
                booking_pb2.CreateBookingRequest(
                    event_id=event["event_id"],
                    seat_ids=[seat],
                    request_id=str(uuid.uuid4()),
                    payment_method=json_format.ParseDict(card(), payment_pb2.PaymentMethod()),
                ),
                metadata=bearer(token),
            )
            assert booking.state == booking_pb2.BOOKING_STATE_CONFIRMED
            booking_ids.append(booking.booking_id)
    assert len(booking_ids) == 20
    with psycopg.connect(libpq_url(mesh.env["BOOKING_DATABASE_URL"])) as conn:
        [(held,)] = conn.execute(
            "SELECT count(*) FROM outbox WHERE sent_time IS NULL AND routing_key = %s",
            ("booking.confirmed",),
        ).fetchall()
    assert held >= 20, "the confirmations wait in the outbox"
    assert not any(emails_about(mail_sink, b) for b in booking_ids)
    proxy.restore()
    wait_for(lambda: all(emails_about(mail_sink, b) for b in booking_ids), "all 20 emails", 60)
    drained(mesh, mail_sink)
    assert [len(emails_about(mail_sink, b)) for b in booking_ids] == [1] * 20


def test_a_crash_between_recording_and_ack_sends_once(
    edge: Edge,
    event: dict,
    mail_sink: MailSink,
    mesh: Mesh,
    keys_dir: Path,
) -> None:
    buyer = mint_token(keys_dir, email="crashy@example.com")  # no welcome message in between
    mesh.stop("notification")
    mesh.start_service(
        "notification",
        name="notification-crashing",
        env={"FAILPOINTS": "notification_after_record"},
    )
    try:
        booking = book(edge, buyer, event["event_id"], ["standard-4-9"]).body
        process = mesh.processes["notification-crashing"]
        wait_for(lambda: process.poll() is not None, "the failpoint to kill the consumer")
    finally:
        mesh.stop("notification-crashing")
        mesh.start_service("notification")
    wait_for(lambda: emails_about(mail_sink, booking["booking_id"]), "the email after restart")
    drained(mesh, mail_sink)
    assert len(emails_about(mail_sink, booking["booking_id"])) == 1
