"""Tickets: a signed token a gate scanner can verify offline, printed as a QR
code on a PDF."""

from __future__ import annotations

import io
import time
from typing import Any

import segno
from fpdf import FPDF

from runtime.signing import KeyRing
from ticketing.booking.v1 import messages_pb2

TICKET_ISSUER = "ticketing-tickets"


def ticket_claims(confirmed: messages_pb2.BookingConfirmed) -> dict[str, Any]:
    booking = confirmed.booking
    return {
        "iss": TICKET_ISSUER,
        "sub": booking.booking_id,
        "event_id": booking.event_id,
        "seats": [seat.seat_id for seat in booking.seats],
        "holder": confirmed.user_email,
        "iat": int(time.time()),
    }


def money(amount_minor: int, currency: str) -> str:
    return f"{amount_minor / 100:,.2f} {currency}"


def _latin1(text: str) -> str:
    # The PDF's built-in fonts are Latin-1; anything else prints as '?'.
    return text.encode("latin-1", "replace").decode("latin-1")


def ticket_pdf(confirmed: messages_pb2.BookingConfirmed, token: str) -> bytes:
    booking, event = confirmed.booking, confirmed.event
    qr = io.BytesIO()
    # A fixed mask pattern: choosing the best of eight costs ~8x the time of
    # the whole PDF and buys nothing a phone camera needs.
    # One pixel per module: the PDF scales it up (without smoothing), and the
    # PNG encoder, pure Python, costs by the pixel.
    segno.make(token, error="m", mask=0).save(qr, kind="png", scale=1, border=4)
    qr.seek(0)

    pdf = FPDF(format=(148, 210))  # A5, in mm
    pdf.set_title(_latin1(f"Ticket: {event.title}"))
    pdf.set_subject(booking.booking_id)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.multi_cell(0, 9, _latin1(event.title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=11)
    starts = event.starts_at.ToDatetime().strftime("%A %d %B %Y, %H:%M UTC")
    for line in (event.venue, starts, "", f"Booking {booking.booking_id}"):
        pdf.cell(0, 6, _latin1(line), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    for seat in booking.seats:
        tier = seat.seat_id.split("-", 1)[0].upper()
        pdf.cell(
            0,
            6,
            _latin1(
                f"{seat.seat_id}  ({tier})  "
                f"{money(seat.price.amount_minor, seat.price.currency_code)}"
            ),
            new_x="LMARGIN",
            new_y="NEXT",
        )
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(
        0,
        7,
        f"Total {money(booking.total.amount_minor, booking.total.currency_code)}",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.image(qr, x=pdf.l_margin, y=pdf.get_y() + 4, w=70)
    return bytes(pdf.output())


class TicketSigner:
    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys

    def token(self, confirmed: messages_pb2.BookingConfirmed) -> str:
        return self._keys.sign(ticket_claims(confirmed))
