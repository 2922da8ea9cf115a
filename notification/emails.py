"""The emails themselves: text bodies, and the ticket PDF for confirmations."""

from __future__ import annotations

from email.message import Message as MailMessage
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, parseaddr

from google.protobuf.message import Message

from notification.domain import Kind, Notification, parse
from runtime.tickets import TicketSigner, money, ticket_pdf
from ticketing.auth.v1 import messages_pb2 as auth_messages
from ticketing.booking.v1 import messages_pb2 as booking_messages


def compose(notification: Notification, sender: str, signer: TicketSigner) -> MailMessage:
    # The email package's legacy classes: with its default policy every header
    # set is parsed into a class made on the fly, ~0.8 ms of CPU an email.
    message, kind = parse(notification.message_type, notification.payload)
    text = MIMEText(_body(message, kind))  # us-ascii if it can be, else utf-8
    if isinstance(message, booking_messages.BookingConfirmed):
        # A boundary of our own: a random one is checked against the whole body
        # with a regex compiled per email. The notification id is in no body.
        email: MailMessage = MIMEMultipart(boundary=f"ticketing-{notification.notification_id}")
        email.attach(text)
        pdf = MIMEApplication(ticket_pdf(message, signer.tokens(message)), "pdf")
        pdf.add_header(
            "Content-Disposition",
            "attachment",
            filename=f"ticket-{message.booking.booking_id}.pdf",
        )
        email.attach(pdf)
    else:
        email = text
    email["From"] = formataddr(parseaddr(sender))  # encodes a non-ASCII display name
    email["To"] = notification.recipient
    email["Subject"] = notification.subject
    email["Date"] = format_datetime(notification.create_time)
    # Stable across retries, so a mail client folds a rare duplicate delivery.
    email["Message-ID"] = f"<{notification.notification_id}@ticketing.example.com>"
    email["X-Ticketing-Kind"] = kind.name
    return email


def _seat_lines(booking: Message) -> list[str]:
    return [
        f"  {seat.seat_id:<16} {money(seat.price.amount_minor, seat.price.currency_code)}"
        for seat in booking.seats  # type: ignore[attr-defined]
    ]


def _valid_until(message: Message) -> str:
    expires = message.expire_time.ToDatetime()  # type: ignore[attr-defined]
    return expires.strftime("%H:%M UTC on %d %B %Y")


def _body(message: Message, kind: Kind) -> str:
    if isinstance(message, auth_messages.UserRegistered):
        return (
            f"Hello {message.display_name},\n\nyour account {message.email} is ready. "
            "Enjoy the show!\n"
        )
    if isinstance(message, auth_messages.EmailVerificationRequested):
        return (
            f"Hello {message.display_name},\n\nyour verification code is\n\n"
            f"    {message.code}\n\n"
            f"It is valid until {_valid_until(message)} and works once. "
            "If you did not create an account, ignore this email.\n"
        )
    if isinstance(message, auth_messages.PasswordResetRequested):
        return (
            f"Hello {message.display_name},\n\nthe code to set a new password is\n\n"
            f"    {message.code}\n\n"
            f"It is valid until {_valid_until(message)} and works once. Setting a new "
            "password signs you out everywhere. If you did not ask for it, ignore this "
            "email: your password stays as it is.\n"
        )
    booking = message.booking  # type: ignore[attr-defined]
    event = message.event  # type: ignore[attr-defined]
    when = event.starts_at.ToDatetime().strftime("%A %d %B %Y, %H:%M UTC")
    header = [f"{event.title}", f"{event.venue}, {when}", "", f"Booking {booking.booking_id}"]
    total = money(booking.total.amount_minor, booking.total.currency_code)
    if kind is Kind.BOOKING_CONFIRMED:
        lines = [
            "Your tickets are confirmed.",
            "",
            *header,
            "",
            *_seat_lines(booking),
            "",
            f"Total paid: {total}",
            "",
            "Your ticket is attached; show its QR code at the door.",
        ]
    elif kind is Kind.BOOKING_FAILED:
        lines = [
            "Your booking did not go through, and you have not been charged.",
            "",
            *header,
            f"Reason: {booking.failure_reason}",
        ]
    elif kind is Kind.EVENT_CANCELLED:
        refunded = message.refunded_amount  # type: ignore[attr-defined]
        reason = message.event_cancellation_reason  # type: ignore[attr-defined]
        lines = [
            "This event is cancelled by its organizer, and your booking with it.",
            "",
            *header,
            *([f"Reason: {reason}"] if reason else []),
            "",
            *_seat_lines(booking),
            "",
            f"Refunded: {money(refunded.amount_minor, refunded.currency_code)}",
        ]
    else:
        refunded = message.refunded_amount  # type: ignore[attr-defined]
        lines = [
            "Your booking is cancelled.",
            "",
            *header,
            "",
            *_seat_lines(booking),
            "",
            f"Refunded: {money(refunded.amount_minor, refunded.currency_code)}",
        ]
    return "\n".join(lines) + "\n"
