"""Holds as a resource: a buyer's seats kept for them during checkout, with a
countdown (`expire_time`), renewable a few times, bought by a booking.

A hold is made of the same Redis seat holds a booking takes (event.holds: one
all-or-nothing script, the owner token `hold:<hold_id>`, a fencing token, the
user's max_tickets_per_user checked in the same script), plus a record of it
(its user, seats, expiry, renewals and, once bought, its booking) beside them
in Redis. So a hold survives a restart of the event service, lapses on time
whether or not the service runs, and a booking sells its seats with the
owner and fencing tokens ClaimHold hands over, by the sale's usual rules.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from event import domain
from event.domain import EventInfo, SeatRef, Tier
from event.holds import HOLD_RECORD_RETENTION_MS, Hold, HoldStore
from event.service import EventUseCases, HoldResult, seats_unavailable
from runtime.errors import Conflict, FailedPrecondition, NotFound, bad_field, parse_uuid
from runtime.identity import Caller, require_verified_email

# Ids of holds made with a request_id: the user and request_id name the hold,
# so a retry finds it.
_HOLD_NAMESPACE = uuid.UUID("0b5c7f0e-3d4a-4c55-9a53-6f3e2a1d9c88")
MAX_RENEWALS = 2
# Best-available reads unsold seats front rows first, in chunks that start
# small (right after the cursor the seats are mostly free) and double, up to
# this many seats among chunks with a free seat, to find a row with the seats
# side by side.
BEST_AVAILABLE_FIRST_CHUNK = 32
BEST_AVAILABLE_LARGEST_CHUNK = 256
BEST_AVAILABLE_SEARCHED = 2000
# A concurrent retry of the same request waits this long for the first to finish.
CREATE_WAIT_SECONDS = 5.0
ADJACENT, SPLIT = "ADJACENT", "SPLIT"


@dataclass(frozen=True)
class HoldView:
    hold_id: str
    info: EventInfo
    seats: tuple[SeatRef, ...]
    expire_ms: int
    renewals_left: int
    placement: str  # ADJACENT, SPLIT or '' (seats named by the buyer)
    booking_id: str


def hold_not_found(hold_id: str) -> NotFound:
    return NotFound("HOLD_NOT_FOUND", f"hold {hold_id!r} not found", {"hold_id": hold_id})


def hold_refused(reason: str, hold_id: str) -> NotFound | FailedPrecondition:
    if reason == "HOLD_NOT_FOUND":
        return hold_not_found(hold_id)
    messages = {
        "HOLD_EXPIRED": "the hold has expired; its seats are no longer kept",
        "HOLD_USED": "the hold was already bought by a booking",
        "HOLD_RENEWALS_EXHAUSTED": f"a hold can be renewed at most {MAX_RENEWALS} times",
    }
    return FailedPrecondition(reason, messages.get(reason, reason), {"hold_id": hold_id})


def owner_of(hold_id: str) -> str:
    return f"hold:{hold_id}"


class HoldUseCases:
    def __init__(
        self,
        events: EventUseCases,
        holds: HoldStore,
        hold_ttl_seconds: int,
        require_verified_email: bool = False,
    ) -> None:
        self._events = events
        self._holds = holds
        self._ttl_ms = hold_ttl_seconds * 1000
        self._require_verified_email = require_verified_email

    async def create(
        self,
        who: Caller,
        event_id: str,
        seat_ids: Sequence[str],
        best: tuple[Tier | None, int] | None,
        request_id: str,
    ) -> HoldView:
        if self._require_verified_email:
            require_verified_email(who)
        info = await self._events.event_info(event_id)
        self._events.check_on_sale(info)
        if seat_ids and best is not None:
            raise bad_field("best_available", "give seat_ids or best_available, not both")
        if not seat_ids and best is None:
            raise bad_field("seat_ids", "name the seats, or ask for best_available")
        if len(request_id) > 128:
            raise bad_field("request_id", "must be at most 128 characters")
        wanted = domain.check_seat_request(seat_ids, info) if seat_ids else []
        if best is not None:
            self._check_best(info, *best)
        hold_id = str(
            uuid.uuid5(_HOLD_NAMESPACE, f"{who.user_id}/{request_id}")
            if request_id
            else uuid.uuid4()
        )
        event_key = str(info.event_id)
        deadline = time.monotonic() + CREATE_WAIT_SECONDS
        while not await self._holds.create_record(
            event_key,
            hold_id,
            {"user": who.user_id, "state": "creating", "request": request_id},
            self._ttl_ms + HOLD_RECORD_RETENTION_MS,
        ):
            # A retry of a request: the hold it made, once it is made.
            found = await self._holds.record(hold_id)
            if found is not None and found[1].get("state") != "creating":
                if found[0] != event_key:
                    raise FailedPrecondition(
                        "REQUEST_ID_REUSED",
                        "this request_id was used for a hold on another event",
                        {"hold_id": hold_id},
                    )
                return await self.get(who, hold_id)
            if time.monotonic() > deadline:
                raise Conflict("HOLD_PENDING", "the same request is still being held; retry")
            await asyncio.sleep(0.05)
        try:
            if best is not None:
                hold, wanted, placement = await self._hold_best(info, hold_id, who, *best)
            else:
                hold = await self._hold(info, hold_id, who, wanted)
                placement = ""
        except BaseException:
            await self._holds.delete_record(event_key, hold_id)
            raise
        fields: dict[str, str | int] = {
            "owner": owner_of(hold_id),
            "seats": ",".join(s.seat_id for s in wanted),
            "expire_ms": hold.expire_ms,
            "renewals_left": MAX_RENEWALS,
            "fence": hold.fencing_token,
            "placement": placement,
            "booking": "",
            "released": "0",
            "state": "live",
        }
        await self._holds.update_record(
            event_key, hold_id, fields, hold.expire_ms + HOLD_RECORD_RETENTION_MS
        )
        return HoldView(hold_id, info, tuple(wanted), hold.expire_ms, MAX_RENEWALS, placement, "")

    @staticmethod
    def _check_best(info: EventInfo, tier: Tier | None, quantity: int) -> None:
        if tier is None:
            raise bad_field("best_available.tier", "is required")
        if info.tier(tier) is None:
            raise bad_field("best_available.tier", f"the event has no {tier.slug} tier")
        if not 1 <= quantity <= domain.MAX_SEATS_PER_HOLD:
            raise bad_field(
                "best_available.quantity", f"must be between 1 and {domain.MAX_SEATS_PER_HOLD}"
            )

    async def _hold(
        self, info: EventInfo, hold_id: str, who: Caller, seats: Sequence[SeatRef]
    ) -> Hold:
        return await self._events.hold_seats(
            info, seats, owner_of(hold_id), self._ttl_ms, who.user_id
        )

    async def _hold_best(
        self, info: EventInfo, hold_id: str, who: Caller, tier: Tier | None, quantity: int
    ) -> tuple[Hold, list[SeatRef], str]:
        """Reads the tier's unsold seats front rows first, a chunk at a time from
        where the tier's cursor says the free ones begin, and lets the hold script
        take `quantity` side by side among each chunk's free ones; if no chunk
        has them, the front-most free seats. Chunks with no free seat at all do
        not count against the seats searched: they only move the cursor on, so
        a taken front is walked once, not by every caller."""
        assert tier is not None
        owner, ttl = owner_of(hold_id), self._ttl_ms
        cursor = await self._holds.cursor(str(info.event_id), tier)
        start = domain.parse_seat_id(cursor) if cursor else None  # None: from the front
        with_free_seats: list[tuple[str, list[SeatRef]]] = []
        searched, chunk = 0, BEST_AVAILABLE_FIRST_CHUNK
        while searched < BEST_AVAILABLE_SEARCHED:
            page = await self._events.unsold_seats(info, tier, start, chunk)
            if not page:
                break
            after = start.seat_id if start else ""
            taken = await self._events.hold_best(
                info, tier, after, page, quantity, True, owner, ttl, who.user_id
            )
            if not isinstance(taken, int):
                return taken[0], taken[1], ADJACENT
            if taken < len(page):
                with_free_seats.append((after, page))
                searched += len(page)
            if len(page) < chunk:
                break
            start = page[-1]
            chunk = min(2 * chunk, BEST_AVAILABLE_LARGEST_CHUNK)
        for after, page in with_free_seats:  # no row has them side by side
            taken = await self._events.hold_best(
                info, tier, after, page, quantity, False, owner, ttl, who.user_id
            )
            if not isinstance(taken, int):
                return taken[0], taken[1], SPLIT
        raise seats_unavailable([f"{quantity} {tier.slug} seats"])

    async def _record(self, user_id: str, hold_id: str) -> tuple[EventInfo, dict[str, str]]:
        parse_uuid(hold_id, "hold_id")
        found = await self._holds.record(hold_id)
        # Someone else's hold is "not found": ids cannot be probed.
        if (
            found is None
            or found[1].get("user") != user_id
            or found[1].get("state") != "live"
            or found[1].get("released") == "1"
        ):
            raise hold_not_found(hold_id)
        return await self._events.event_info(found[0]), found[1]

    async def get(self, who: Caller, hold_id: str) -> HoldView:
        info, fields = await self._record(who.user_id, hold_id)
        return _view(hold_id, info, fields)

    async def renew(self, who: Caller, hold_id: str) -> HoldView:
        info, fields = await self._record(who.user_id, hold_id)
        seats = _seats(fields)
        renewed = await self._holds.renew(
            str(info.event_id), hold_id, seats, who.user_id, self._ttl_ms
        )
        if isinstance(renewed, str):
            raise hold_refused(renewed, hold_id)
        self._events.forget_availability(info.event_id)
        renewed_fields = {"expire_ms": str(renewed[0]), "renewals_left": str(renewed[1])}
        return _view(hold_id, info, fields | renewed_fields)

    async def release(self, who: Caller, hold_id: str) -> None:
        info, fields = await self._record(who.user_id, hold_id)
        refused = await self._holds.drop(str(info.event_id), hold_id, _seats(fields), who.user_id)
        if refused:
            raise hold_refused(refused, hold_id)
        self._events.forget_availability(info.event_id)

    async def claim(self, hold_id: str, user_id: str, booking_id: str) -> HoldResult:
        """The hold's seats for the booking, once (idempotent for that booking)."""
        parse_uuid(booking_id, "booking_id")
        parse_uuid(user_id, "user_id")
        info, fields = await self._record(user_id, hold_id)
        seats = _seats(fields)
        refused = await self._holds.claim(str(info.event_id), hold_id, seats, user_id, booking_id)
        if refused:
            raise hold_refused(refused, hold_id)
        hold = Hold(int(fields["fence"]), int(fields["expire_ms"]))
        return HoldResult(fields["owner"], hold, info, list(seats))


def _seats(fields: dict[str, str]) -> tuple[SeatRef, ...]:
    return tuple(s for s in map(domain.parse_seat_id, fields["seats"].split(",")) if s is not None)


def _view(hold_id: str, info: EventInfo, fields: dict[str, str]) -> HoldView:
    return HoldView(
        hold_id,
        info,
        _seats(fields),
        int(fields["expire_ms"]),
        int(fields["renewals_left"]),
        fields.get("placement", ""),
        fields.get("booking", ""),
    )
