"""The confirmation email without the mesh: its ticket PDF reads back and its
QR code verifies; the mailer survives a mail server restart between batches."""

from __future__ import annotations

import email
import email.policy
import io
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import jwt
import pytest
import zxingcpp
from google.protobuf.timestamp_pb2 import Timestamp
from PIL import Image
from pypdf import PdfReader

from notification.domain import Kind, Notification, State, about, parse, subject
from notification.emails import compose
from notification.mailer import Mailer
from runtime.signing import KeyRing, generate_key
from runtime.tickets import TicketInvalid, TicketSigner
from scripts.mail_sink import MailSink
from scripts.mesh import free_port
from ticketing.auth.v1 import messages_pb2 as auth_messages
from ticketing.booking.v1 import booking_pb2, messages_pb2
from ticketing.common.v1 import money_pb2
from ticketing.event.v1 import event_pb2

SENDER = "Ticketing <tickets@ticketing.example.com>"
# Wide enough to wrap, with characters Latin-1 lacks and PDF string delimiters.
TITLE = "Gala (night) \\ of the Œuvres complètes — a very long title to wrap ✓"


def confirmation(seats: list[str]) -> Notification:
    usd = money_pb2.Money(currency_code="USD", amount_minor=5000)
    message = messages_pb2.BookingConfirmed(
        booking=booking_pb2.Booking(
            booking_id=str(uuid.uuid4()),
            user_id=str(uuid.uuid4()),
            event_id=str(uuid.uuid4()),
            seats=[booking_pb2.BookedSeat(seat_id=s, price=usd) for s in seats],
            total=money_pb2.Money(currency_code="USD", amount_minor=5000 * len(seats)),
        ),
        user_email="fan@example.com",
        event=event_pb2.EventSummary(
            event_id=str(uuid.uuid4()),
            title=TITLE,
            venue="Main Hall",
            starts_at=Timestamp(seconds=1_900_000_000),
        ),
    )
    return Notification(
        uuid.uuid4(),
        uuid.UUID(message.booking.user_id),
        Kind.BOOKING_CONFIRMED,
        message.user_email,
        subject(message, Kind.BOOKING_CONFIRMED),
        str(uuid.uuid4()),
        "ticketing.booking.v1.BookingConfirmed",
        message.SerializeToString(),
        State.PENDING,
        0,
        datetime.now(UTC),
    )


@pytest.fixture
def keys(tmp_path: Path) -> KeyRing:
    generate_key(tmp_path)
    return KeyRing(tmp_path)


def received(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def test_the_ticket_reads_back_and_its_qr_code_verifies(keys: KeyRing) -> None:
    seats = [f"standard-1-{n}" for n in range(1, 11)]
    notification = confirmation(seats)
    mail = received(compose(notification, SENDER, TicketSigner(keys)).as_bytes())
    assert mail["Subject"] == f"Your tickets for {TITLE}"
    assert mail["X-Ticketing-Kind"] == "BOOKING_CONFIRMED"
    assert "Total paid: 500.00 USD" in mail.get_body(("plain",)).get_content()

    [attachment] = list(mail.iter_attachments())
    assert attachment.get_content_type() == "application/pdf"
    pdf = PdfReader(io.BytesIO(attachment.get_content()), strict=True)
    assert pdf.metadata is not None and pdf.metadata.title == f"Ticket: {TITLE}"
    assert len(pdf.pages) == len(seats)  # a page, and a ticket, per seat
    booking_id = messages_pb2.BookingConfirmed.FromString(notification.payload).booking.booking_id
    signer = TicketSigner(keys)
    for seat, page in zip(seats, pdf.pages, strict=True):
        text = page.extract_text()
        for expected in (booking_id, "Main Hall", f"{seat}  (STANDARD)  50.00 USD", "Œuvres"):
            assert expected in text
        assert "?" in text  # the one character Windows-1252 lacks
        assert "Booking total 500.00 USD, 10 seat(s)" in text

        [image] = page.images
        qr = Image.open(io.BytesIO(image.data))
        [code] = zxingcpp.read_barcodes(qr.resize((qr.width * 4, qr.height * 4), Image.NEAREST))
        token = code.text
        claims = jwt.decode(
            token, keys.public_key(jwt.get_unverified_header(token)["kid"]), algorithms=["ES256"]
        )
        assert claims["sub"] == booking_id and claims["seat_id"] == seat
        assert signer.verify(token).seat_id == seat


def test_a_ticket_token_verifies_only_as_signed(keys: KeyRing, tmp_path: Path) -> None:
    notification = confirmation(["vip-1-1"])
    message = messages_pb2.BookingConfirmed.FromString(notification.payload)
    signer = TicketSigner(keys)
    token = signer.tokens(message)["vip-1-1"]
    claims = signer.verify(token)
    assert (claims.booking_id, claims.seat_id, claims.holder) == (
        message.booking.booking_id,
        "vip-1-1",
        "fan@example.com",
    )
    header, payload, signature = token.split(".")
    forged = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    other_dir = tmp_path / "other"
    generate_key(other_dir)
    for bad in (
        f"{header}.{forged}.{signature}",  # tampered
        TicketSigner(KeyRing(other_dir)).tokens(message)["vip-1-1"],  # someone else's key
        "not-a-token",
        keys.sign({"iss": "ticketing-tickets", "sub": "x", "iat": 1}),  # no seat
        keys.sign({"iss": "ticketing-auth", "sub": "x", "iat": 1, "event_id": "e", "seat_id": "s"}),
    ):
        with pytest.raises(TicketInvalid):
            signer.verify(bad)


def test_the_mailer_reconnects_after_the_server_restarts(keys: KeyRing) -> None:
    sink = MailSink(free_port()).start()
    mailer = Mailer("127.0.0.1", sink.port)
    try:
        first, second = (
            compose(confirmation(["vip-1-1"]), SENDER, TicketSigner(keys)) for _ in "ab"
        )
        assert mailer.send([first]) == [None]
        sink.stop()
        sink.start()  # the connection kept from the first batch is dead now
        assert mailer.send([second]) == [None]
        assert [m["Message-ID"] for m in sink.messages] == [
            first["Message-ID"],
            second["Message-ID"],
        ]
    finally:
        mailer.close()
        sink.stop()


def _notification(message: object, message_type: str) -> Notification:
    parsed, kind = parse(message_type, message.SerializeToString())  # type: ignore[attr-defined]
    return Notification(
        uuid.uuid4(),
        uuid.uuid4(),
        kind,
        "fan@example.com",
        subject(parsed, kind),
        str(uuid.uuid4()),
        message_type,
        message.SerializeToString(),  # type: ignore[attr-defined]
        State.PENDING,
        0,
        datetime.now(UTC),
    )


@pytest.mark.parametrize(
    ("cls", "kind", "words"),
    [
        (auth_messages.EmailVerificationRequested, Kind.VERIFICATION_CODE, "verification code"),
        (auth_messages.PasswordResetRequested, Kind.PASSWORD_RESET, "set a new password"),
    ],
)
def test_code_emails_carry_the_code_and_its_expiry(
    keys: KeyRing, cls: type, kind: Kind, words: str
) -> None:
    message = cls(
        user_id=str(uuid.uuid4()),
        email="fan@example.com",
        display_name="Fan",
        code="042917",
        expire_time=Timestamp(seconds=1_900_000_000),
    )
    parsed, parsed_kind = parse(cls.DESCRIPTOR.full_name, message.SerializeToString())
    assert parsed_kind is kind and about(parsed) == ("", "")
    mail = received(
        compose(
            _notification(message, cls.DESCRIPTOR.full_name), SENDER, TicketSigner(keys)
        ).as_bytes()
    )
    assert mail["X-Ticketing-Kind"] == kind.name
    text = mail.get_body(("plain",)).get_content()
    assert words in text and "    042917\n" in text
    assert "valid until 17:46 UTC on 17 March 2030" in text


def test_a_booking_cancelled_with_its_event_is_the_event_cancelled_kind(keys: KeyRing) -> None:
    usd = money_pb2.Money(currency_code="USD", amount_minor=5000)
    booking = booking_pb2.Booking(
        booking_id=str(uuid.uuid4()),
        user_id=str(uuid.uuid4()),
        event_id=str(uuid.uuid4()),
        seats=[booking_pb2.BookedSeat(seat_id="vip-1-1", price=usd)],
        total=usd,
    )
    event = event_pb2.EventSummary(title="Gala", venue="Main Hall")
    plain = messages_pb2.BookingCancelled(
        booking=booking, user_email="fan@example.com", event=event, refunded_amount=usd
    )
    by_event = messages_pb2.BookingCancelled()
    by_event.CopyFrom(plain)
    by_event.event_cancelled = True
    by_event.event_cancellation_reason = "the artist is ill"
    name = "ticketing.booking.v1.BookingCancelled"
    assert parse(name, plain.SerializeToString())[1] is Kind.BOOKING_CANCELLED
    parsed, kind = parse(name, by_event.SerializeToString())
    assert kind is Kind.EVENT_CANCELLED
    assert about(parsed) == (booking.booking_id, booking.event_id)
    mail = received(compose(_notification(by_event, name), SENDER, TicketSigner(keys)).as_bytes())
    assert mail["Subject"] == "Gala is cancelled; your tickets are refunded"
    text = mail.get_body(("plain",)).get_content()
    assert "Reason: the artist is ill" in text and "Refunded: 50.00 USD" in text
