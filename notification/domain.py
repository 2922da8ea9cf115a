"""Which email answers which message, free of I/O."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from google.protobuf.message import DecodeError, Message

from runtime.consumer import PoisonMessage
from ticketing.auth.v1 import messages_pb2 as auth_messages
from ticketing.booking.v1 import messages_pb2 as booking_messages

MAX_SEND_ATTEMPTS = 12  # with the backoff below, about four hours of retries


class Kind(enum.IntEnum):
    """Values match ticketing.notification.v1.NotificationKind."""

    WELCOME = 1
    BOOKING_CONFIRMED = 2
    BOOKING_FAILED = 3
    BOOKING_CANCELLED = 4
    EVENT_CANCELLED = 5
    VERIFICATION_CODE = 6
    PASSWORD_RESET = 7


class State(enum.IntEnum):
    """Values match ticketing.notification.v1.NotificationState."""

    PENDING = 1
    SENT = 2
    FAILED = 3


MESSAGE_KINDS: dict[str, tuple[type[Message], Kind]] = {
    "ticketing.auth.v1.UserRegistered": (auth_messages.UserRegistered, Kind.WELCOME),
    "ticketing.booking.v1.BookingConfirmed": (
        booking_messages.BookingConfirmed,
        Kind.BOOKING_CONFIRMED,
    ),
    "ticketing.booking.v1.BookingFailed": (booking_messages.BookingFailed, Kind.BOOKING_FAILED),
    "ticketing.booking.v1.BookingCancelled": (
        booking_messages.BookingCancelled,
        Kind.BOOKING_CANCELLED,
    ),
    "ticketing.auth.v1.EmailVerificationRequested": (
        auth_messages.EmailVerificationRequested,
        Kind.VERIFICATION_CODE,
    ),
    "ticketing.auth.v1.PasswordResetRequested": (
        auth_messages.PasswordResetRequested,
        Kind.PASSWORD_RESET,
    ),
}
# Messages addressed by their own email and user id fields, about no booking.
_ACCOUNT_MESSAGES = (
    auth_messages.UserRegistered,
    auth_messages.EmailVerificationRequested,
    auth_messages.PasswordResetRequested,
)


@dataclass(frozen=True)
class Notification:
    notification_id: uuid.UUID
    user_id: uuid.UUID
    kind: Kind
    recipient: str
    subject: str
    message_id: str
    message_type: str
    payload: bytes
    state: State
    attempts: int
    create_time: datetime
    sent_time: datetime | None = None
    booking_id: str = ""
    event_id: str = ""


def parse(message_type: str, body: bytes) -> tuple[Message, Kind]:
    """The message and the kind of email it calls for; PoisonMessage if neither."""
    if message_type not in MESSAGE_KINDS:
        raise PoisonMessage(f"no notification for message type {message_type!r}")
    cls, kind = MESSAGE_KINDS[message_type]
    try:
        message = cls.FromString(body)
    except DecodeError as exc:
        raise PoisonMessage(f"undecodable {message_type}: {exc}") from exc
    if isinstance(message, booking_messages.BookingCancelled) and message.event_cancelled:
        kind = Kind.EVENT_CANCELLED
    recipient, user_id = addressee(message)
    # No address at all is a deleted account's booking (its email erased), of
    # which a record is kept, unsent.
    if recipient and "@" not in recipient:
        raise PoisonMessage(f"{message_type} names no recipient")
    try:
        uuid.UUID(user_id)
    except ValueError as exc:
        raise PoisonMessage(f"{message_type} names no user") from exc
    return message, kind


USER_DELETED = auth_messages.UserDeleted.DESCRIPTOR.full_name


def deleted_user(body: bytes) -> uuid.UUID:
    """The id of the account a UserDeleted message says is gone."""
    try:
        return uuid.UUID(auth_messages.UserDeleted.FromString(body).user_id)
    except (DecodeError, ValueError) as exc:
        raise PoisonMessage(f"{USER_DELETED} names no user: {exc}") from exc


def addressee(message: Message) -> tuple[str, str]:
    """(email, user id) of whom a message concerns."""
    if isinstance(message, _ACCOUNT_MESSAGES):
        return message.email, message.user_id
    return message.user_email, message.booking.user_id  # type: ignore[attr-defined]


def about(message: Message) -> tuple[str, str]:
    """(booking id, event id) a message is about; empty strings where none."""
    if isinstance(message, _ACCOUNT_MESSAGES):
        return "", ""
    booking = message.booking  # type: ignore[attr-defined]
    return booking.booking_id, booking.event_id


def subject(message: Message, kind: Kind) -> str:
    account_subjects = {
        Kind.WELCOME: "Welcome to Ticketing",
        Kind.VERIFICATION_CODE: "Your Ticketing verification code",
        Kind.PASSWORD_RESET: "Your Ticketing password reset code",
    }
    if kind in account_subjects:
        return account_subjects[kind]
    title = message.event.title  # type: ignore[attr-defined]
    return {
        Kind.BOOKING_CONFIRMED: f"Your tickets for {title}",
        Kind.BOOKING_FAILED: f"Your booking for {title} did not go through",
        Kind.BOOKING_CANCELLED: f"Your booking for {title} is cancelled",
        Kind.EVENT_CANCELLED: f"{title} is cancelled; your tickets are refunded",
    }[kind]


def retry_delay(attempts: int) -> timedelta:
    """Backoff between delivery attempts: 2s, 4s, ... capped at 30 minutes."""
    return timedelta(seconds=min(2**attempts, 1800))
