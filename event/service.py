"""Event use cases: the catalogue, seat maps and the hold/sell lifecycle.

PostgreSQL is the authority on what is sold; Redis on what is held. A hold
is taken in Redis only for seats not marked sold there (markers rebuilt from
PostgreSQL whenever Redis lost them, see event.holds), and a sale commits in
PostgreSQL only while the hold is still the caller's, with the fencing token
and the unique index on live sales as the last word.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from event import domain
from event.domain import (
    Cancellation,
    EventChanges,
    EventInfo,
    EventSearch,
    EventState,
    SeatRef,
    Tier,
    TierPlan,
)
from event.holds import (
    Hold,
    HoldStore,
    MarkersMissing,
    OverLimit,
    Refusal,
    hold_store_unavailable,
)
from event.repository import AVAILABLE, SOLD, Catalog, SalePath, TierCounts
from runtime import pagination
from runtime.db import in_transaction
from runtime.errors import (
    Conflict,
    FailedPrecondition,
    ServiceError,
    Unavailable,
    bad_field,
    not_found,
    parse_uuid,
    permission_denied,
)
from runtime.identity import Caller
from runtime.rules import field_rules
from ticketing.event.v1 import event_pb2

log = logging.getLogger(__name__)

# A sale's hold is stretched to at least this before PostgreSQL commits it.
CONFIRM_GRACE_MS = 30_000
MAX_TICKET_LIMIT = field_rules(event_pb2.Event, "max_tickets_per_user").lte


def _check_ticket_limit(limit: int) -> None:
    if not 0 <= limit <= MAX_TICKET_LIMIT:
        raise bad_field("event.max_tickets_per_user", f"must be between 0 and {MAX_TICKET_LIMIT}")


class SeatStatus:
    AVAILABLE, HELD, SOLD = "AVAILABLE", "HELD", "SOLD"


@dataclass(frozen=True)
class TierAvailability:
    plan: TierPlan
    sold: int
    held: int
    checked_in: int = 0

    @property
    def available(self) -> int:
        return max(self.plan.capacity - self.sold - self.held, 0)


@dataclass(frozen=True)
class EventView:
    info: EventInfo
    tiers: tuple[TierAvailability, ...]


@dataclass(frozen=True)
class SeatView:
    seat: SeatRef
    plan: TierPlan
    status: str


def etag_mismatch(current: EventInfo) -> Conflict:
    return Conflict(
        "ETAG_MISMATCH",
        "the event changed since it was read; read it again and retry",
        {"event_id": str(current.event_id), "etag": current.etag},
    )


def _check_etag(current: EventInfo, etag: str) -> None:
    if etag and etag.strip() != current.etag:
        raise etag_mismatch(current)


@dataclass(frozen=True)
class HoldResult:
    owner: str
    hold: Hold
    event: EventInfo
    seats: list[SeatRef]


def seats_unavailable(
    seat_ids: Sequence[str],
    kind: type[ServiceError] = Conflict,
    reason: str = "SEAT_UNAVAILABLE",
) -> ServiceError:
    """Conflict while another buyer has them; FailedPrecondition when the
    caller's own hold is gone."""
    return kind(
        reason,
        f"seats not available: {', '.join(seat_ids)}",
        {"seat_ids": ",".join(seat_ids)},
    )


def ticket_limit_exceeded(info: EventInfo, counted: int) -> FailedPrecondition:
    limit = info.max_tickets_per_user
    return FailedPrecondition(
        "TICKET_LIMIT_EXCEEDED",
        f"at most {limit} tickets per user for this event; you hold or own {counted}",
        {"max_tickets_per_user": str(limit), "counted": str(counted)},
    )


class EventUseCases:
    def __init__(
        self,
        engine: AsyncEngine,
        sale_path: SalePath,
        holds: HoldStore,
        hold_ttl_seconds: int,
        availability_cache_seconds: float,
        event_cache_seconds: float = 1.0,
    ) -> None:
        self._engine = engine
        self._sale_path = sale_path
        self._holds = holds
        self._hold_ttl_seconds = hold_ttl_seconds
        # Every replica caches events for a moment: a change made here is seen
        # here at once, one made by another replica within event_cache_seconds.
        # (A sale of a cancelled event is refused by PostgreSQL whatever the
        # cache says, see sell_seats.)
        self._event_ttl = event_cache_seconds
        self._events: OrderedDict[uuid.UUID, tuple[float, EventInfo]] = OrderedDict()
        # A crowd refreshing the seat map must not compete with the buyers: each
        # replica answers GetEvent from a snapshot, dropped when this replica
        # changes the event and at most this old otherwise (other replicas'
        # changes), so it is recomputed at most once per change, not per read.
        self._availability_ttl = availability_cache_seconds
        self._availability: dict[uuid.UUID, tuple[float, EventView]] = {}
        self._rebuilds: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._marks_owed: list[tuple[str, Sequence[SeatRef], str, str]] = []

    async def create_event(
        self,
        organizer: Caller,
        title: str,
        description: str,
        venue: str,
        starts_at: datetime | None,
        tiers: Sequence[TierPlan],
        state: EventState | None = None,
        sale_start_time: datetime | None = None,
        sale_end_time: datetime | None = None,
        max_tickets_per_user: int = 0,
    ) -> EventView:
        now = datetime.now(UTC)
        domain.check_new_event(
            title, venue, starts_at, description, tiers, now, sale_start_time, sale_end_time
        )
        if state is EventState.CANCELLED:
            raise bad_field("event.state", "a new event is a draft or published")
        _check_ticket_limit(max_tickets_per_user)
        assert starts_at is not None
        info = EventInfo(
            uuid.uuid4(),
            title.strip(),
            description,
            venue.strip(),
            starts_at,
            uuid.UUID(organizer.user_id),
            now,
            tuple(sorted(tiers, key=lambda plan: plan.tier)),
            state=state or EventState.PUBLISHED,
            sale_start_time=sale_start_time,
            sale_end_time=sale_end_time,
            update_time=now,
            max_tickets_per_user=max_tickets_per_user,
        )
        async with self._engine.begin() as conn:
            await Catalog(conn).add_event(info)
        log.info(
            "created event %s with %d seats", info.event_id, sum(p.capacity for p in info.tiers)
        )
        return EventView(info, tuple(TierAvailability(p, 0, 0) for p in info.tiers))

    async def get_event(self, who: Caller | None, event_id: str) -> EventView:
        info = await self.visible_event(who, event_id)
        now = time.monotonic()
        cached = self._availability.get(info.event_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        view = (await self._with_availability([info]))[0]
        if self._availability_ttl > 0:
            if len(self._availability) > 10_000:
                self._availability.clear()
            self._availability[info.event_id] = (now + self._availability_ttl, view)
        return view

    async def list_events(
        self, who: Caller | None, page_size: int, page_token: str, search: EventSearch
    ) -> tuple[list[EventView], str]:
        limit = pagination.page_size(page_size)
        after = pagination.decode_keyset(page_token)
        if search.organizer_id is not None and not domain.ORGANIZER_ID.fullmatch(
            search.organizer_id
        ):
            raise bad_field("organizer_id", "must be a user id (a UUID)")
        if len(search.query) > domain.MAX_QUERY_LENGTH:
            raise bad_field("query", f"must be at most {domain.MAX_QUERY_LENGTH} characters")
        if (
            search.starts_after
            and search.starts_before
            and search.starts_after >= search.starts_before
        ):
            raise bad_field("starts_before", "must be after starts_after")
        if search.starts_after is None and not search.include_started:
            search = dataclasses.replace(search, starts_after=datetime.now(UTC))
        async with self._engine.connect() as conn:
            found = await Catalog(conn).events_page(
                limit + 1,
                after,
                search,
                None if who is None else uuid.UUID(who.user_id),
                who is not None and who.is_admin,
            )
        page, next_token = pagination.keyset_page(found, limit, lambda e: (e.starts_at, e.event_id))
        return await self._with_availability(page), next_token

    async def list_seats(
        self,
        event_id: str,
        tier: Tier | None,
        status: str | None,
        page_size: int,
        page_token: str,
        who: Caller | None = None,
    ) -> tuple[list[SeatView], str]:
        info = await self.visible_event(who, event_id)
        limit = pagination.page_size(page_size, default=100, maximum=1000)
        after_id = pagination.cursor_text(page_token, "after")
        after = domain.parse_seat_id(after_id) if after_id is not None else None
        if after_id is not None and after is None:
            raise bad_field("page_token", "is not a token from a previous page")
        if status == SeatStatus.HELD:
            found = await self._held_seats(info, tier, after, limit + 1)
        else:
            found = await self._seats_from_db(info, tier, status, after, limit + 1)
        page = found[:limit]
        next_token = (
            pagination.encode_token({"after": page[-1].seat.seat_id}) if len(found) > limit else ""
        )
        return page, next_token

    async def lock(
        self, event_id: str, seat_ids: Sequence[str], owner: str, ttl_seconds: int, user: str = ""
    ) -> HoldResult:
        info = await self.event_info(event_id)
        if info.state is EventState.DRAFT:
            raise not_found("event", event_id)  # as for any caller but its organizer
        domain.check_on_sale(info, datetime.now(UTC))
        wanted = domain.check_seat_request(seat_ids, info)
        if not owner:
            raise bad_field("owner", "is required")
        if ttl_seconds < 0:
            raise bad_field("ttl_seconds", "must not be negative")
        # The server's HOLD_TTL_SECONDS is the longest a hold lasts, whatever the
        # caller asks: a longer wish gets the server's TTL (the reply's
        # expire_time says so), never a seat kept off sale for an hour.
        ttl_ms = min(ttl_seconds or self._hold_ttl_seconds, self._hold_ttl_seconds) * 1000
        if user:
            parse_uuid(user, "user_id")
        hold = await self.hold_seats(info, wanted, owner, ttl_ms, user)
        return HoldResult(owner, hold, info, wanted)

    async def hold_seats(
        self, info: EventInfo, wanted: Sequence[SeatRef], owner: str, ttl_ms: int, user: str
    ) -> Hold:
        """Holds every seat for the owner or none: Conflict SEAT_UNAVAILABLE when
        one is taken, FailedPrecondition TICKET_LIMIT_EXCEEDED when the user would
        pass the event's limit."""
        await self._pay_marks_owed()
        outcome = await self._hold(info, wanted, owner, ttl_ms, user)
        if isinstance(outcome, Refusal) and outcome.sold_markers:
            # A marker can outlive its sale (a return racing a rebuild);
            # PostgreSQL decides, and markers it disowns go.
            marked = {domain.parse_seat_id(k): v for k, v in outcome.sold_markers.items()}
            sold = await self._sale_path.sold_among(info.event_id, [s for s in marked if s])
            stale = {s: m for s, m in marked.items() if s is not None and s not in sold}
            if stale:
                log.warning("dropping %d stale sold markers of %s", len(stale), info.event_id)
                await self._holds.drop_markers(str(info.event_id), stale)
                outcome = await self._hold(info, wanted, owner, ttl_ms, user)
        if isinstance(outcome, Refusal):
            raise seats_unavailable(outcome.taken)
        if isinstance(outcome, OverLimit):
            raise ticket_limit_exceeded(info, outcome.counted)
        self._availability.pop(info.event_id, None)
        return outcome

    async def hold_best(
        self,
        info: EventInfo,
        tier: Tier,
        after: str,
        candidates: Sequence[SeatRef],
        quantity: int,
        adjacent_only: bool,
        owner: str,
        ttl_ms: int,
        user: str,
    ) -> tuple[Hold, list[SeatRef]] | int:
        """Best-available among the candidates (event.holds.HoldStore.lock_best);
        if they have no such seats, how many leading ones are taken."""
        await self._pay_marks_owed()
        event_id, limit = str(info.event_id), info.max_tickets_per_user
        for attempt in range(2):
            try:
                outcome = await self._holds.lock_best(
                    event_id,
                    tier,
                    after,
                    candidates,
                    quantity,
                    adjacent_only,
                    owner,
                    ttl_ms,
                    user,
                    limit,
                )
                break
            except MarkersMissing as missing:
                if attempt:  # Redis lost its data again meanwhile
                    raise hold_store_unavailable() from missing
                await self._restore_markers(info.event_id)
        if isinstance(outcome, OverLimit):
            raise ticket_limit_exceeded(info, outcome.counted)
        if isinstance(outcome, int):
            return outcome
        self._availability.pop(info.event_id, None)
        hold, seat_ids = outcome
        return hold, [s for s in map(domain.parse_seat_id, seat_ids) if s is not None]

    async def unsold_seats(
        self, info: EventInfo, tier: Tier, after: SeatRef | None, limit: int
    ) -> list[SeatRef]:
        return await self._sale_path.unsold_after(info.event_id, tier, after, limit)

    async def _hold(
        self, info: EventInfo, seats: Sequence[SeatRef], owner: str, ttl_ms: int, user: str
    ) -> Hold | Refusal | OverLimit:
        event_id, limit = str(info.event_id), info.max_tickets_per_user
        try:
            return await self._holds.lock(event_id, seats, owner, ttl_ms, user, limit)
        except MarkersMissing:
            await self._restore_markers(info.event_id)
        try:
            return await self._holds.lock(event_id, seats, owner, ttl_ms, user, limit)
        except MarkersMissing as again:  # Redis lost its data again meanwhile
            raise hold_store_unavailable() from again

    async def _restore_markers(self, event_id: uuid.UUID) -> None:
        """Rebuilds the event's sold markers and fence counter from PostgreSQL,
        once however many holds are waiting for them."""
        task = self._rebuilds.get(event_id)
        if task is None:

            async def rebuild() -> None:
                try:
                    for _ in range(2):  # again if Redis lost its data again midway
                        # The epoch first: a rebuild that Redis's next loss
                        # interrupts is followed by one in a later epoch still.
                        floor = await self._sale_path.next_fence_floor(event_id)
                        sold = await self._sale_path.sold_markers(event_id)
                        marked = await self._holds.restore(str(event_id), sold, floor)
                        if marked is not None:
                            log.info("rebuilt %d sold markers of %s", marked, event_id)
                            return
                        log.warning("Redis lost its data during a rebuild of %s", event_id)
                finally:
                    del self._rebuilds[event_id]

            task = self._rebuilds[event_id] = asyncio.ensure_future(rebuild())
        await asyncio.shield(task)

    async def release(self, event_id: str, seat_ids: Sequence[str], owner: str) -> list[str]:
        info = await self.event_info(event_id)
        seats = domain.check_seat_request(seat_ids, info)
        if not owner:
            raise bad_field("owner_token", "is required")
        released = await self._holds.release(str(info.event_id), seats, owner)
        self._availability.pop(info.event_id, None)
        return released

    async def confirm(
        self,
        event_id: str,
        seat_ids: Sequence[str],
        owner: str,
        fencing_token: int,
        booking_id: str,
    ) -> tuple[EventInfo, list[SeatRef]]:
        info = await self.event_info(event_id)
        seats = domain.check_seat_request(seat_ids, info)
        booking = parse_uuid(booking_id, "booking_id")
        if not owner:
            raise bad_field("owner_token", "is required")
        if fencing_token <= 0:
            raise bad_field("fencing_token", "must be the token LockSeat returned")
        buyer, lost = await self._holds.verify(
            str(info.event_id), seats, owner, booking_id, CONFIRM_GRACE_MS
        )
        if lost:
            if set(seats) <= set(await self._sold_to(info, booking)):
                # A retry of a sale that committed, whose hold Redis has since
                # forgotten (or which died before marking it): mark it now, or
                # a later hold would find the seats free in Redis.
                await self._mark_sold(info, seats, booking_id, owner)
                return info, seats
            raise seats_unavailable(lost, FailedPrecondition, "HOLD_EXPIRED")

        sold = await self._sale_path.sell(
            info.event_id, seats, booking, fencing_token, uuid.UUID(buyer) if buyer else None
        )
        if not sold:
            already = set(await self._sold_to(info, booking))
            if not set(seats) <= already:  # else: a retry of a sale that committed
                raise seats_unavailable(
                    [s.seat_id for s in seats if s not in already],
                    FailedPrecondition,
                )
        self._availability.pop(info.event_id, None)
        await self._mark_sold(info, seats, booking_id, owner)
        return info, seats

    async def _mark_sold(
        self, info: EventInfo, seats: Sequence[SeatRef], booking_id: str, owner: str
    ) -> None:
        try:
            await self._holds.mark_sold(str(info.event_id), seats, booking_id, owner)
        except Unavailable:
            # The sale stands. Holds trust the markers, so they are owed: the next
            # hold on this replica writes them first, well within the stretched
            # hold (CONFIRM_GRACE_MS) that keeps these seats from anyone else.
            log.warning("sold %s but could not mark it in Redis yet", booking_id)
            self._marks_owed.append((str(info.event_id), seats, booking_id, owner))

    async def _pay_marks_owed(self) -> None:
        while self._marks_owed:
            event_id, seats, booking_id, owner = self._marks_owed[0]
            await self._holds.mark_sold(event_id, seats, booking_id, owner)
            self._marks_owed.pop(0)

    async def _sold_to(self, info: EventInfo, booking: uuid.UUID) -> list[SeatRef]:
        async with self._engine.connect() as conn:
            return await Catalog(conn).sold_to(info.event_id, booking)

    async def return_seats(self, event_id: str, booking_id: str) -> list[SeatRef]:
        info = await self.event_info(event_id)
        booking = parse_uuid(booking_id, "booking_id")
        ever_sold = await in_transaction(
            self._engine, lambda conn: Catalog(conn).unsell(info.event_id, booking)
        )
        await self._holds.unmark_sold(str(info.event_id), ever_sold, booking_id)
        self._availability.pop(info.event_id, None)
        return ever_sold

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    def forget_availability(self, event_id: uuid.UUID) -> None:
        """Drops this replica's availability snapshot of the event (it changed)."""
        self._availability.pop(event_id, None)

    def check_on_sale(self, info: EventInfo) -> None:
        """As for LockSeat: a draft is not found, and the sale must be open."""
        if info.state is EventState.DRAFT:
            raise not_found("event", str(info.event_id))
        domain.check_on_sale(info, datetime.now(UTC))

    async def event_info(self, event_id: str) -> EventInfo:
        key = parse_uuid(event_id, "event_id")
        now = time.monotonic()
        cached = self._events.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self._engine.connect() as conn:
            info = await Catalog(conn).event(key)
        if info is None:
            raise not_found("event", event_id)
        self._remember(info, now)
        return info

    def _remember(self, info: EventInfo, now: float | None = None) -> None:
        self._events[info.event_id] = ((now or time.monotonic()) + self._event_ttl, info)
        self._events.move_to_end(info.event_id)
        if len(self._events) > 10_000:
            self._events.popitem(last=False)
        self._availability.pop(info.event_id, None)

    async def visible_event(self, who: Caller | None, event_id: str) -> EventInfo:
        """The event, unless it is a draft of someone else's: then it is not found."""
        info = await self.event_info(event_id)
        if who is None:
            visible = info.visible_to(None, False)
        else:
            visible = info.visible_to(who.user_id, who.is_admin)
        if not visible:
            raise not_found("event", event_id)
        return info

    async def _owned_event(self, who: Caller, event_id: str, for_update: Catalog) -> EventInfo:
        """The event read for a change by its organizer or an admin, locked."""
        key = parse_uuid(event_id, "event_id")
        info = await for_update.event(key, for_update=True)
        if info is None or not info.visible_to(who.user_id, who.is_admin):
            raise not_found("event", event_id)
        if not (who.is_admin or str(info.organizer_id) == who.user_id):
            raise permission_denied("only the event's organizer or an admin may change it")
        return info

    async def update_event(
        self, who: Caller, event_id: str, changes: EventChanges, mask: Sequence[str], etag: str
    ) -> EventView:
        paths = domain.check_update_mask(mask)
        if "max_tickets_per_user" in paths:
            _check_ticket_limit(changes.max_tickets_per_user)
        now = datetime.now(UTC)

        async def update(conn: AsyncConnection) -> EventInfo:
            catalog = Catalog(conn)
            current = await self._owned_event(who, event_id, catalog)
            _check_etag(current, etag)
            domain.check_changeable(current, now)
            values: dict[str, object] = {}
            for path in paths:
                values[path] = getattr(changes, path)
            if "title" in values:
                values["title"] = changes.title.strip()
            if "venue" in values:
                values["venue"] = changes.venue.strip()
            if "tiers" in values:
                domain.check_tier_change(current, changes.tiers)
                values["tiers"] = tuple(sorted(changes.tiers, key=lambda plan: plan.tier))
            after = dataclasses.replace(
                current, **values, version=current.version + 1, update_time=now
            )
            # The event as the update leaves it is checked whole, as a new one
            # (its start was in the future, else check_changeable refused).
            domain.check_new_event(
                after.title,
                after.venue,
                after.starts_at,
                after.description,
                after.tiers,
                now,
                after.sale_start_time,
                after.sale_end_time,
            )
            if not await catalog.update_event(current, after):
                raise etag_mismatch(current)
            return after

        info = await in_transaction(self._engine, update)
        self._remember(info)
        log.info("updated %s of event %s", ",".join(paths), info.event_id)
        return await self.get_event(who, str(info.event_id))

    async def cancel_event(self, who: Caller, event_id: str, reason: str, etag: str) -> EventView:
        """Cancels the event and, in the same transaction, announces it: the
        booking service refunds its bookings from that message, so the call
        returns at once. Cancelling a cancelled event changes nothing."""
        if len(reason) > domain.MAX_CANCEL_REASON_LENGTH:
            raise bad_field(
                "reason", f"must be at most {domain.MAX_CANCEL_REASON_LENGTH} characters"
            )
        now = datetime.now(UTC)

        async def cancel(conn: AsyncConnection) -> EventInfo:
            catalog = Catalog(conn)
            current = await self._owned_event(who, event_id, catalog)
            if current.state is EventState.CANCELLED:
                return current  # cancelled already: once is enough
            _check_etag(current, etag)
            domain.check_changeable(current, now)
            after = dataclasses.replace(
                current,
                state=EventState.CANCELLED,
                version=current.version + 1,
                update_time=now,
                cancellation=Cancellation(reason.strip(), now),
            )
            if not await catalog.update_event(current, after):
                raise etag_mismatch(current)
            await catalog.announce_cancelled(after)
            log.info("cancelled event %s", current.event_id)
            return after

        info = await in_transaction(self._engine, cancel)
        self._remember(info)
        return await self.get_event(who, str(info.event_id))

    async def record_refund_progress(
        self, event_id: uuid.UUID, total: int, refunded: int, finish_time: datetime | None
    ) -> None:
        """Notes how far the booking service got refunding a cancelled event."""
        async with self._engine.begin() as conn:
            known = await Catalog(conn).record_refund_progress(
                event_id, total, refunded, finish_time
            )
        if not known:
            log.warning("refund progress of %s, which is not a cancelled event", event_id)
        self._events.pop(event_id, None)
        self._availability.pop(event_id, None)

    async def publish_event(self, who: Caller, event_id: str) -> EventView:
        now = datetime.now(UTC)

        async def publish(conn: AsyncConnection) -> EventInfo:
            catalog = Catalog(conn)
            current = await self._owned_event(who, event_id, catalog)
            if current.state is EventState.PUBLISHED:
                return current  # published already: nothing to do
            domain.check_changeable(current, now)
            after = dataclasses.replace(
                current, state=EventState.PUBLISHED, version=current.version + 1, update_time=now
            )
            if not await catalog.update_event(current, after):
                raise etag_mismatch(current)
            log.info("published event %s", current.event_id)
            return after

        info = await in_transaction(self._engine, publish)
        self._remember(info)
        return await self.get_event(who, str(info.event_id))

    async def _with_availability(self, infos: Sequence[EventInfo]) -> list[EventView]:
        if not infos:
            return []
        ids = [i.event_id for i in infos]
        counts = await self._sale_path.tier_counts(ids)
        held = await self._holds.held_counts([str(i) for i in ids])
        none = TierCounts(0, 0)
        return [
            EventView(
                info,
                tuple(
                    TierAvailability(
                        p,
                        (tier := counts.get((info.event_id, p.tier), none)).sold,
                        held.get((str(info.event_id), p.tier), 0),
                        tier.checked_in,
                    )
                    for p in info.tiers
                ),
            )
            for info in infos
        ]

    async def held_by_tier(self, info: EventInfo) -> dict[Tier, int]:
        """Seats of the event held right now, for every tier it has."""
        held = await self._holds.held_counts([str(info.event_id)])
        return {p.tier: held.get((str(info.event_id), p.tier), 0) for p in info.tiers}

    async def _seats_from_db(
        self,
        info: EventInfo,
        tier: Tier | None,
        status: str | None,
        after: SeatRef | None,
        wanted: int,
    ) -> list[SeatView]:
        db_status = {SeatStatus.AVAILABLE: AVAILABLE, SeatStatus.SOLD: SOLD}.get(status or "")
        found: list[SeatView] = []
        async with self._engine.connect() as conn:
            catalog = Catalog(conn)
            # AVAILABLE in the database may be HELD in Redis; keep reading until
            # the page is full of what was asked for.
            while len(found) < wanted:
                batch = await catalog.seats_page(
                    info.event_id, tier, db_status, after, wanted - len(found)
                )
                if not batch:
                    break
                held = await self._holds.held_among(
                    str(info.event_id), [s for s, sold in batch if not sold]
                )
                for seat, sold in batch:
                    shown = (
                        SeatStatus.SOLD
                        if sold
                        else SeatStatus.HELD
                        if seat in held
                        else SeatStatus.AVAILABLE
                    )
                    if status is None or shown == status:
                        found.append(SeatView(seat, info.plan_for(seat), shown))
                after = batch[-1][0]
        return found

    async def _held_seats(
        self, info: EventInfo, tier: Tier | None, after: SeatRef | None, wanted: int
    ) -> list[SeatView]:
        held: list[SeatRef] = []
        for plan in info.tiers:
            if tier is None or plan.tier is tier:
                ids = await self._holds.held_seat_ids(str(info.event_id), plan.tier)
                held += [s for s in map(domain.parse_seat_id, ids) if s is not None]
        page = sorted(s for s in held if after is None or s > after)[:wanted]
        return [SeatView(s, info.plan_for(s), SeatStatus.HELD) for s in page]
