"""Tickets: one signed token per seat, which a gate scanner can verify offline
against the ticket keys (GET /v1/tickets/jwks), printed as a QR code on one
PDF page per seat. The notification service attaches the PDF to the
confirmation email; the booking service hands the tokens and the same PDF out
on demand and checks the tokens in at the door, so both read one key
directory (TICKET_KEYS_DIR) and render with this module."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt
import zxingcpp
from fpdf import FPDF, image_parsing
from PIL import Image

from runtime.identity import ALGORITHM
from runtime.signing import KeyRing
from ticketing.booking.v1 import booking_pb2, messages_pb2

TICKET_ISSUER = "ticketing-tickets"

# fpdf2 lays out and writes the page. What it costs depends on how it is
# called (PERF_EMAIL_NOTES.md, "fpdf2 again"): ~0.8 ms of CPU a ticket besides
# the QR encoding as below, ~1.5 ms the obvious way (multi_cell and cell, a
# 1-bit image, zlib's default level). A fresh FPDF costs 0.02 ms, less than a
# deep copy of a prepared one, so there is no template.
# zlib level 1 for the QR image: 0.05 ms where the default level costs 0.5 ms,
# for ~0.5 KB more. Process-wide; fpdf2 makes nothing else in this service.
image_parsing.SETTINGS.compression_level = 1
PAGE = (148, 210)  # A5, in mm


def ticket_claims(confirmed: messages_pb2.BookingConfirmed, seat_id: str) -> dict[str, Any]:
    """The claims of one seat's ticket: the booking it belongs to (`sub`), the
    event, the seat and the holder's email."""
    booking = confirmed.booking
    return {
        "iss": TICKET_ISSUER,
        "sub": booking.booking_id,
        "event_id": booking.event_id,
        "seat_id": seat_id,
        "holder": confirmed.user_email,
        "iat": int(time.time()),
    }


@dataclass(frozen=True)
class TicketClaims:
    """What a verified ticket token says."""

    booking_id: str
    event_id: str
    seat_id: str
    holder: str


class TicketInvalid(Exception):
    """Not a ticket token these keys signed, or not one of this shape."""


def money(amount_minor: int, currency: str) -> str:
    return f"{amount_minor / 100:,.2f} {currency}"


def _winansi(text: str) -> str:
    # The standard fonts are set to Windows-1252: what it lacks prints as '?'.
    return text.encode("cp1252", "replace").decode("cp1252")


def _wrap(pdf: FPDF, text: str) -> list[str]:
    """Greedy word wrap in the current (standard) font; a word wider than a line
    stays whole. The widths come from the font itself: get_string_width() copies
    the graphics state each call, ~20 µs a word."""
    font, size = pdf.current_font, pdf.font_size_pt / pdf.k

    def width(s: str) -> float:
        return font.get_text_width(pdf.normalize_text(s), size, None)[1]

    space = width(" ")
    lines: list[str] = []
    line, wide = "", 0.0
    for word in text.split():
        word_wide = width(word)
        if line and wide + space + word_wide > pdf.epw:
            lines.append(line)
            line = ""
        line, wide = (f"{line} {word}", wide + space + word_wide) if line else (word, word_wide)
    return [*lines, line]


def qr_image(token: str) -> Image.Image:
    """The token as a QR code: 8-bit grey, one pixel per module, quiet zone included."""
    # A fixed mask pattern: choosing the best of eight costs ~6x the encoding
    # and buys nothing a phone camera needs.
    barcode = zxingcpp.create_barcode(token, zxingcpp.BarcodeFormat.QRCode, ecLevel="M", dataMask=0)
    image = barcode.to_image()  # 0 or 255
    height, width = image.shape
    # Grey, not 1-bit: fpdf2 transcodes a 1-bit image to CCITT through a TIFF
    # (0.25 ms), and a 1-bit image with FlateDecode does not read back (2.8.9).
    return Image.frombytes("L", (width, height), bytes(memoryview(image)))


def ticket_pdf(confirmed: messages_pb2.BookingConfirmed, tokens: dict[str, str]) -> bytes:
    """One page per seat of the booking, each with that seat's QR code."""
    booking, event = confirmed.booking, confirmed.event
    pdf = FPDF(format=PAGE)
    pdf.core_fonts_encoding = "windows-1252"  # so '€' and 'Œ' print
    pdf.set_title(f"Ticket: {event.title}")  # UTF-16 in the document info: keeps every character
    pdf.set_subject(booking.booking_id)
    for seat in booking.seats:
        _ticket_page(pdf, confirmed, seat, tokens[seat.seat_id])
    return bytes(pdf.output())


def _ticket_page(
    pdf: FPDF,
    confirmed: messages_pb2.BookingConfirmed,
    seat: booking_pb2.BookedSeat,
    token: str,
) -> None:
    booking, event = confirmed.booking, confirmed.event
    pdf.add_page()

    # text() rather than cell(): a quarter of the CPU, and the page has no
    # alignment, borders or breaks for cell() to do. Each line is vertically
    # centred in its line height (mm), as cell() would place it.
    top = pdf.t_margin

    def line(height: float, text: str) -> None:
        nonlocal top
        if text:
            pdf.text(pdf.l_margin, top + height / 2 + 0.3 * pdf.font_size, text)
        top += height

    pdf.set_font("Helvetica", "B", 18)
    for title in _wrap(pdf, _winansi(event.title)):
        line(9, title)
    pdf.set_font("Helvetica", size=11)
    starts = event.starts_at.ToDatetime().strftime("%A %d %B %Y, %H:%M UTC")
    for text in (event.venue, starts, "", f"Booking {booking.booking_id}"):
        line(6, _winansi(text))
    top += 2  # a little space before the seat
    tier = seat.seat_id.split("-", 1)[0].upper()
    price = money(seat.price.amount_minor, seat.price.currency_code)
    pdf.set_font("Helvetica", "B", 11)
    line(7, _winansi(f"{seat.seat_id}  ({tier})  {price}"))
    pdf.set_font("Helvetica", size=11)
    total = money(booking.total.amount_minor, booking.total.currency_code)
    line(6, _winansi(f"Booking total {total}, {len(booking.seats)} seat(s)"))
    pdf.image(qr_image(token), x=pdf.l_margin, y=top + 4, w=70)


class TicketSigner:
    """Signs and verifies ticket tokens with the keys of one directory."""

    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys

    def tokens(self, confirmed: messages_pb2.BookingConfirmed) -> dict[str, str]:
        """A token per seat of the booking, by seat id."""
        return {
            seat.seat_id: self._keys.sign(ticket_claims(confirmed, seat.seat_id))
            for seat in confirmed.booking.seats
        }

    def verify(self, token: str) -> TicketClaims:
        """The claims of a token these keys signed; TicketInvalid otherwise."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._keys.public_key(kid) if isinstance(kid, str) else None
            if key is None:
                raise TicketInvalid("signed by no ticket key")
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                issuer=TICKET_ISSUER,
                options={"require": ["iss", "sub", "iat"]},
            )
        except jwt.PyJWTError as exc:
            raise TicketInvalid(str(exc)) from exc
        fields = [claims.get(name) for name in ("sub", "event_id", "seat_id", "holder")]
        if not all(isinstance(value, str) and value for value in fields[:3]):
            raise TicketInvalid("not a seat's ticket")
        return TicketClaims(*(str(value or "") for value in fields))

    def jwks(self) -> list[dict[str, str]]:
        return self._keys.jwks()
