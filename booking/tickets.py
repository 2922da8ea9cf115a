"""Tickets of confirmed bookings: handed out on demand (a signed token per
seat, and the PDF the confirmation email carries) and checked in at the door.

A ticket token is a JWT signed with the ticket keys (runtime.tickets), so a
scanner can check its signature offline against GET /v1/tickets/jwks; what it
cannot check offline is whether the ticket was already used or its booking
cancelled, which is what CheckIn answers. Each ticket is admitted once: the
check-in row's primary key decides between concurrent scans.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from booking import convert
from booking.domain import Booking, CheckIn, State
from booking.gateways import CheckIns, Ledger, Organizers
from runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    Invalid,
    NotFound,
    bad_field,
    not_found,
    parse_uuid,
)
from runtime.identity import Caller
from runtime.rules import field_rules
from runtime.tickets import TicketInvalid, TicketSigner, ticket_pdf
from ticketing.booking.v1 import booking_pb2

log = logging.getLogger(__name__)

MAX_TOKEN_LENGTH = field_rules(booking_pb2.CheckInRequest, "ticket_token").max_len


@dataclass(frozen=True)
class Admitted:
    booking_id: uuid.UUID
    seat_id: str
    event_id: uuid.UUID
    check_in_time: datetime


def ticket_invalid(why: str) -> Invalid:
    return Invalid("TICKET_INVALID", f"not a valid ticket: {why}")


class TicketUseCases:
    def __init__(
        self, ledger: Ledger, check_ins: CheckIns, organizers: Organizers, signer: TicketSigner
    ) -> None:
        self._ledger = ledger
        self._check_ins = check_ins
        self._organizers = organizers
        self._signer = signer

    async def _confirmed(self, who: Caller, booking_id: str) -> Booking:
        booking = await self._ledger.get(parse_uuid(booking_id, "booking_id"))
        # Another user's booking is "not found": ids cannot be probed.
        if booking is None or not (who.is_admin or str(booking.user_id) == who.user_id):
            raise not_found("booking", booking_id)
        if booking.state is not State.CONFIRMED:
            raise FailedPrecondition(
                "BOOKING_NOT_CONFIRMED",
                f"only a confirmed booking has tickets; this one is {booking.state.name}",
                {"booking_id": booking_id, "state": booking.state.name},
            )
        return booking

    async def tickets(self, who: Caller, booking_id: str) -> dict[str, str]:
        """A token per seat, by seat id, in the booking's order."""
        booking = await self._confirmed(who, booking_id)
        return self._signer.tokens(convert.confirmed(booking))

    async def pdf(self, who: Caller, booking_id: str) -> bytes:
        booking = await self._confirmed(who, booking_id)
        message = convert.confirmed(booking)
        return ticket_pdf(message, self._signer.tokens(message))

    def public_keys(self) -> list[dict[str, str]]:
        return self._signer.jwks()

    async def check_in(self, who: Caller, token: str, event_id: str) -> Admitted:
        if not token:
            raise bad_field("ticket_token", "is required")
        if len(token) > MAX_TOKEN_LENGTH:
            raise bad_field("ticket_token", f"must be at most {MAX_TOKEN_LENGTH} characters")
        gate = parse_uuid(event_id, "event_id") if event_id else None
        try:
            claims = self._signer.verify(token)
            booking_key = uuid.UUID(claims.booking_id)
        except (TicketInvalid, ValueError) as exc:
            raise ticket_invalid("its signature does not verify") from exc
        booking = await self._ledger.get(booking_key)
        if (
            booking is None
            or str(booking.event.event_id) != claims.event_id
            or claims.seat_id not in booking.seat_ids
        ):
            raise ticket_invalid("no such ticket was sold")
        event = booking.event.event_id
        if gate is not None and gate != event:
            raise ticket_invalid("it is for another event")
        if not who.is_admin:
            try:
                organizer = await self._organizers.organizer_of(event)
            except NotFound as exc:
                raise ticket_invalid("its event is gone") from exc
            if str(organizer) != who.user_id:
                raise ticket_invalid("it is for an event you do not organize")
        if booking.state is not State.CONFIRMED:
            raise FailedPrecondition(
                "TICKET_VOID",
                f"the ticket's booking is {booking.state.name}",
                {"booking_id": str(booking.booking_id), "seat_id": claims.seat_id},
            )
        [seat] = [s for s in booking.seats if s.seat_id == claims.seat_id]
        at, first = await self._check_ins.record(
            CheckIn(booking, seat, uuid.UUID(who.user_id), datetime.now(UTC))
        )
        if not first:
            raise AlreadyExists(
                "ALREADY_CHECKED_IN",
                f"this ticket was checked in at {at.isoformat()}",
                {
                    "booking_id": str(booking.booking_id),
                    "seat_id": claims.seat_id,
                    "check_in_time": at.isoformat(),
                },
            )
        log.info("checked in %s of %s", claims.seat_id, booking.booking_id)
        return Admitted(booking.booking_id, claims.seat_id, event, at)
