"""Tickets: a signed token a gate scanner can verify offline, printed as a QR
code on a one-page PDF."""

from __future__ import annotations

import time
from typing import Any

import zxingcpp
from fpdf.fonts import CORE_FONTS_CHARWIDTHS

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


# The PDF is written directly rather than through a layout library: it is one
# fixed page, and fpdf2 took ~1.3 ms of CPU a ticket, twice what all the rest
# of composing an email takes; writing it takes ~0.1 ms.
MM = 72 / 25.4  # PDF units (points) per millimetre
PAGE_WIDTH, PAGE_HEIGHT = 148 * MM, 210 * MM  # A5
MARGIN = 10 * MM
QR_WIDTH = 70 * MM
BOLD_WIDTHS = CORE_FONTS_CHARWIDTHS["helveticaB"]  # per 1000 units of font size

# Objects 1-5 never change: catalog, page tree, page, the two fonts. The page
# refers to the per-ticket ones by number: 6 QR image, 7 text, 8 document info.
_FIXED_OBJECTS = (
    b"<< /Type /Catalog /Pages 2 0 R >>",
    b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
    b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %.2f %.2f] /Contents 7 0 R "
    b"/Resources << /Font << /F1 4 0 R /F2 5 0 R >> /XObject << /QR 6 0 R >> >> >>"
    % (PAGE_WIDTH, PAGE_HEIGHT),
    # The standard fonts every viewer has: nothing to embed. WinAnsiEncoding is
    # Windows-1252, which is how the text is encoded.
    b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>",
)

# 0 (dark) and 255 (light) pixels as bit digits: 1-bit grey is 0 black, 1 white.
_PIXEL_BITS = bytes.maketrans(b"\x00\xff", b"01")


def _winansi(text: str) -> bytes:
    # What Windows-1252 lacks prints as '?'.
    return text.encode("cp1252", "replace")


def _literal(text: str) -> bytes:
    escaped = _winansi(text).replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    return b"(" + escaped.replace(b"\r", b"\\r") + b")"


def _info_string(text: str) -> bytes:
    # UTF-16 with a byte-order mark: document info shows any character.
    return b"<FEFF" + text.encode("utf-16-be").hex().encode() + b">"


def _wrap_bold(text: str, size: float, width: float) -> list[str]:
    """Greedy word wrap in Helvetica-Bold; a word wider than a line stays whole."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        wide = sum(BOLD_WIDTHS[chr(b)] for b in _winansi(candidate)) * size / 1000
        if line and wide > width:
            lines.append(line)
            candidate = word
        line = candidate
    return [*lines, line]


def _stream(dictionary: bytes, data: bytes) -> bytes:
    return b"<< %b /Length %d >>\nstream\n%b\nendstream" % (dictionary, len(data), data)


def qr_image(token: str) -> bytes:
    """The token as a QR code: a PDF image object, one pixel per module."""
    # A fixed mask pattern: choosing the best of eight costs ~6x the encoding
    # and buys nothing a phone camera needs.
    barcode = zxingcpp.create_barcode(token, zxingcpp.BarcodeFormat.QRCode, ecLevel="M", dataMask=0)
    image = barcode.to_image()  # 8-bit grey with the quiet zone, 0 or 255
    height, width = image.shape
    pixels = bytes(memoryview(image))
    # Packed to one bit per pixel, each row to whole bytes: ~1 KB, so not worth
    # compressing (zlib costs more here than the whole PDF).
    pad = -width % 8
    rows = b"".join(
        (int(pixels[i : i + width].translate(_PIXEL_BITS), 2) << pad).to_bytes(
            (width + pad) // 8, "big"
        )
        for i in range(0, len(pixels), width)
    )
    return _stream(
        b"/Type /XObject /Subtype /Image /Width %d /Height %d "
        b"/ColorSpace /DeviceGray /BitsPerComponent 1" % (width, height),
        rows,
    )


def _text(confirmed: messages_pb2.BookingConfirmed) -> tuple[bytes, float]:
    """The page's text as PDF operators, and how far down (in points) it reaches."""
    booking, event = confirmed.booking, confirmed.event
    starts = event.starts_at.ToDatetime().strftime("%A %d %B %Y, %H:%M UTC")
    # (font, size in points, line height in mm, text)
    lines = [
        (b"F2", 18, 9, title) for title in _wrap_bold(event.title, 18, PAGE_WIDTH - 2 * MARGIN)
    ]
    lines += [
        (b"F1", 11, 6, line) for line in (event.venue, starts, "", f"Booking {booking.booking_id}")
    ]
    lines.append((b"F1", 11, 2, ""))  # a little space before the seats
    for seat in booking.seats:
        tier = seat.seat_id.split("-", 1)[0].upper()
        price = money(seat.price.amount_minor, seat.price.currency_code)
        lines.append((b"F1", 11, 6, f"{seat.seat_id}  ({tier})  {price}"))
    total = money(booking.total.amount_minor, booking.total.currency_code)
    lines.append((b"F2", 11, 7, f"Total {total}"))

    ops = [b"BT"]
    top = MARGIN
    for font, size, height, text in lines:
        if text:
            baseline = top + (height * MM + 0.7 * size) / 2  # vertically centred in its line
            ops.append(
                b"/%b %d Tf 1 0 0 1 %.2f %.2f Tm %b Tj"
                % (font, size, MARGIN, PAGE_HEIGHT - baseline, _literal(text))
            )
        top += height * MM
    ops.append(b"ET")
    return b"\n".join(ops), top


def ticket_pdf(confirmed: messages_pb2.BookingConfirmed, token: str) -> bytes:
    booking, event = confirmed.booking, confirmed.event
    text, bottom = _text(confirmed)
    qr_top = bottom + 4 * MM
    draw_qr = b"q %.2f 0 0 %.2f %.2f %.2f cm /QR Do Q" % (
        QR_WIDTH,
        QR_WIDTH,
        MARGIN,
        PAGE_HEIGHT - qr_top - QR_WIDTH,
    )
    info = b"<< /Title %b /Subject %b >>" % (
        _info_string(f"Ticket: {event.title}"),
        _info_string(booking.booking_id),
    )
    objects = (*_FIXED_OBJECTS, qr_image(token), _stream(b"", text + b"\n" + draw_qr), info)

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")  # the second line marks it binary
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%b\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        len(objects),
        xref,
    )
    return bytes(out)


class TicketSigner:
    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys

    def token(self, confirmed: messages_pb2.BookingConfirmed) -> str:
        return self._keys.sign(ticket_claims(confirmed))
