"""Bookings as protobuf, for the API and for the messages."""

from __future__ import annotations

from booking.domain import Announcement, Booking, Cancelled, CheckIn, Confirmed, Failed
from runtime import timestamps
from runtime.outbox import OutboxMessage
from ticketing.booking.v1 import booking_pb2, messages_pb2
from ticketing.common.v1 import money_pb2
from ticketing.event.v1 import event_pb2


def money(amount_minor: int, currency: str) -> money_pb2.Money:
    return money_pb2.Money(currency_code=currency, amount_minor=amount_minor)


def booking_to_proto(booking: Booking) -> booking_pb2.Booking:
    return booking_pb2.Booking(
        booking_id=str(booking.booking_id),
        user_id=str(booking.user_id),
        event_id=str(booking.event.event_id),
        seats=[
            booking_pb2.BookedSeat(
                seat_id=s.seat_id, tier=s.tier, price=money(s.price_minor, booking.currency)
            )
            for s in booking.seats
        ],
        total=money(booking.total_minor, booking.currency),
        state=booking.state.value,
        payment_id=str(booking.payment_id) if booking.payment_id else "",
        failure_reason=booking.failure_reason,
        create_time=timestamps.to_proto(booking.create_time),
        update_time=timestamps.to_proto(booking.update_time),
    )


def event_summary(booking: Booking) -> event_pb2.EventSummary:
    return event_pb2.EventSummary(
        event_id=str(booking.event.event_id),
        title=booking.event.title,
        venue=booking.event.venue,
        starts_at=timestamps.to_proto(booking.event.starts_at),
    )


def confirmed(booking: Booking) -> messages_pb2.BookingConfirmed:
    return messages_pb2.BookingConfirmed(
        booking=booking_to_proto(booking),
        user_email=booking.user_email,
        event=event_summary(booking),
    )


def failed(booking: Booking) -> messages_pb2.BookingFailed:
    return messages_pb2.BookingFailed(
        booking=booking_to_proto(booking),
        user_email=booking.user_email,
        event=event_summary(booking),
    )


def cancelled(booking: Booking, refunded_minor: int) -> messages_pb2.BookingCancelled:
    return messages_pb2.BookingCancelled(
        booking=booking_to_proto(booking),
        user_email=booking.user_email,
        event=event_summary(booking),
        refunded_amount=money(refunded_minor, booking.currency),
        event_cancelled=booking.event_cancel_reason is not None,
        event_cancellation_reason=booking.event_cancel_reason or "",
    )


def checked_in(check_in: CheckIn) -> messages_pb2.TicketCheckedIn:
    seat = check_in.seat
    return messages_pb2.TicketCheckedIn(
        booking_id=str(check_in.booking.booking_id),
        event_id=str(check_in.booking.event.event_id),
        seat=booking_pb2.BookedSeat(
            seat_id=seat.seat_id,
            tier=seat.tier,
            price=money(seat.price_minor, check_in.booking.currency),
        ),
        check_in_time=timestamps.to_proto(check_in.time),
        checked_in_by=str(check_in.by),
    )


def outbox_message(announcement: Announcement) -> OutboxMessage:
    """The message a settled booking sends to every subscriber."""
    match announcement:
        case Confirmed(booking):
            return OutboxMessage("booking.confirmed", confirmed(booking))
        case Failed(booking):
            return OutboxMessage("booking.failed", failed(booking))
        case Cancelled(booking, refunded_minor):
            return OutboxMessage("booking.cancelled", cancelled(booking, refunded_minor))
