"""gRPC entry point of the event service: proto in, use case, proto out."""

from __future__ import annotations

import uuid
from datetime import datetime

import grpc
from google.protobuf import empty_pb2, timestamp_pb2
from google.protobuf.message import Message

from event.checkout import ADJACENT, SPLIT, HoldUseCases, HoldView
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
from event.sales import SalesReport, SalesReports
from event.service import EventUseCases, EventView, HoldResult, SeatStatus
from runtime import timestamps
from runtime.errors import bad_field
from runtime.identity import caller, optional_caller
from ticketing.common.v1 import money_pb2
from ticketing.event.v1 import event_pb2, event_pb2_grpc

_STATUS_TO_PROTO = {
    SeatStatus.AVAILABLE: event_pb2.SEAT_STATUS_AVAILABLE,
    SeatStatus.HELD: event_pb2.SEAT_STATUS_HELD,
    SeatStatus.SOLD: event_pb2.SEAT_STATUS_SOLD,
}
_STATUS_FROM_PROTO = {v: k for k, v in _STATUS_TO_PROTO.items()}
AVAILABILITY_CACHE_CONTROL = "public, max-age=1"
EVENT_MESSAGES_KEPT = 10_000
_PLACEMENT = {ADJACENT: event_pb2.PLACEMENT_ADJACENT, SPLIT: event_pb2.PLACEMENT_SPLIT}


def money(plan: TierPlan) -> money_pb2.Money:
    return money_pb2.Money(currency_code=plan.currency, amount_minor=plan.price_minor)


def seat_to_proto(seat: SeatRef, plan: TierPlan, status: str = "") -> event_pb2.Seat:
    return event_pb2.Seat(
        seat_id=seat.seat_id,
        tier=seat.tier.value,
        row=seat.row,
        number=seat.number,
        price=money(plan),
        status=_STATUS_TO_PROTO.get(status, event_pb2.SEAT_STATUS_UNSPECIFIED),
    )


def _optional_time(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    return timestamps.to_proto(moment) if moment is not None else None


def _time_field(message: Message, name: str) -> datetime | None:
    return timestamps.from_proto(getattr(message, name)) if message.HasField(name) else None


def cancellation_to_proto(cancellation: Cancellation | None) -> event_pb2.Cancellation | None:
    if cancellation is None:
        return None
    return event_pb2.Cancellation(
        bookings_total=cancellation.bookings_total,
        bookings_refunded=cancellation.bookings_refunded,
        reason=cancellation.reason,
        cancel_time=timestamps.to_proto(cancellation.cancel_time),
        finish_time=_optional_time(cancellation.finish_time),
    )


def event_to_proto(view: EventView) -> event_pb2.Event:
    info = view.info
    return event_pb2.Event(
        state=info.state.value,
        sale_start_time=_optional_time(info.sale_start_time),
        sale_end_time=_optional_time(info.sale_end_time),
        etag=info.etag,
        cancellation=cancellation_to_proto(info.cancellation),
        update_time=_optional_time(info.update_time or info.create_time),
        event_id=str(info.event_id),
        title=info.title,
        description=info.description,
        venue=info.venue,
        starts_at=timestamps.to_proto(info.starts_at),
        organizer_id=str(info.organizer_id),
        create_time=timestamps.to_proto(info.create_time),
        max_tickets_per_user=info.max_tickets_per_user,
        tiers=[
            event_pb2.EventTier(
                tier=t.plan.tier.value,
                price=money(t.plan),
                rows=t.plan.rows,
                seats_per_row=t.plan.seats_per_row,
                capacity=t.plan.capacity,
                available=t.available,
                held=t.held,
                sold=t.sold,
                checked_in=t.checked_in,
            )
            for t in view.tiers
        ],
    )


def summary(info: EventInfo) -> event_pb2.EventSummary:
    return event_pb2.EventSummary(
        event_id=str(info.event_id),
        title=info.title,
        venue=info.venue,
        starts_at=timestamps.to_proto(info.starts_at),
    )


def _tier(value: int, field: str) -> Tier | None:
    if value == event_pb2.TIER_UNSPECIFIED:
        return None
    try:
        return Tier(value)
    except ValueError as exc:
        raise bad_field(field, "is not a known tier") from exc


def _state(value: int, field: str) -> EventState | None:
    if value == event_pb2.EVENT_STATE_UNSPECIFIED:
        return None
    try:
        return EventState(value)
    except ValueError as exc:
        raise bad_field(field, "is not a known event state") from exc


def _plans(event: event_pb2.Event) -> list[TierPlan]:
    plans = []
    for i, tier in enumerate(event.tiers):
        kind = _tier(tier.tier, f"event.tiers[{i}].tier")
        if kind is None:
            raise bad_field(f"event.tiers[{i}].tier", "is required")
        plans.append(
            TierPlan(
                kind,
                tier.price.amount_minor,
                tier.price.currency_code,
                tier.rows,
                tier.seats_per_row,
            )
        )
    return plans


def hold_to_proto(view: HoldView) -> event_pb2.Hold:
    plans = [view.info.plan_for(s) for s in view.seats]
    return event_pb2.Hold(
        hold_id=view.hold_id,
        event_id=str(view.info.event_id),
        seats=[
            event_pb2.HeldSeat(seat_id=s.seat_id, tier=s.tier.value, price=money(plan))
            for s, plan in zip(view.seats, plans, strict=True)
        ],
        total=money_pb2.Money(
            currency_code=view.info.currency, amount_minor=sum(p.price_minor for p in plans)
        ),
        expire_time=timestamps.from_millis(view.expire_ms),
        renewals_left=view.renewals_left,
        placement=_PLACEMENT.get(view.placement, event_pb2.PLACEMENT_UNSPECIFIED),
        booking_id=view.booking_id,
    )


def lock_response(held: HoldResult) -> event_pb2.LockSeatResponse:
    return event_pb2.LockSeatResponse(
        owner_token=held.owner,
        fencing_token=held.hold.fencing_token,
        expire_time=timestamps.from_millis(held.hold.expire_ms),
        seats=[seat_to_proto(s, held.event.plan_for(s), SeatStatus.HELD) for s in held.seats],
        event=summary(held.event),
    )


def sales_to_proto(report: SalesReport) -> event_pb2.SalesReport:
    info, tiers = report.info, report.tiers

    def total(field: str) -> money_pb2.Money:
        return money_pb2.Money(
            currency_code=info.currency, amount_minor=sum(getattr(t, field) for t in tiers)
        )

    def line(tier: Tier, held: int) -> event_pb2.TierSales:
        sales = recorded.get(tier)
        if sales is None:  # nothing sold or scanned yet: a line of zeros
            zero = money_pb2.Money(currency_code=info.currency, amount_minor=0)
            return event_pb2.TierSales(
                tier=tier.value, gross=zero, refunded=zero, tickets_held=held
            )
        return event_pb2.TierSales(
            tier=tier.value,
            tickets_sold=sales.tickets_sold,
            tickets_refunded=sales.tickets_refunded,
            gross=money_pb2.Money(currency_code=sales.currency, amount_minor=sales.gross_minor),
            refunded=money_pb2.Money(
                currency_code=sales.currency, amount_minor=sales.refunded_minor
            ),
            tickets_held=held,
            tickets_checked_in=sales.checked_in,
        )

    recorded = {t.tier: t for t in tiers}
    gross, refunded = total("gross_minor"), total("refunded_minor")
    return event_pb2.SalesReport(
        event_id=str(info.event_id),
        tiers=[line(tier, held) for tier, held in sorted(report.held.items())],
        tickets_sold=sum(t.tickets_sold for t in tiers),
        tickets_held=sum(report.held.values()),
        tickets_checked_in=sum(t.checked_in for t in tiers),
        gross=gross,
        refunded=refunded,
        net=money_pb2.Money(
            currency_code=info.currency, amount_minor=gross.amount_minor - refunded.amount_minor
        ),
        update_time=timestamps.to_proto(
            max((t.update_time for t in tiers), default=info.create_time)
        ),
    )


class EventServicer(event_pb2_grpc.EventServiceServicer):
    def __init__(self, use_cases: EventUseCases, sales: SalesReports, holds: HoldUseCases) -> None:
        self._events = use_cases
        self._sales = sales
        self._holds = holds
        # The last message built per event, with the view it was built from.
        self._event_messages: dict[uuid.UUID, tuple[EventView, event_pb2.Event]] = {}

    def _event_message(self, view: EventView) -> event_pb2.Event:
        # The use cases hand every reader of an event the same view for up to a
        # second (its availability snapshot), so its message is built once for
        # all of them rather than once per GetEvent.
        built = self._event_messages.get(view.info.event_id)
        if built is not None and built[0] is view:
            return built[1]
        message = event_to_proto(view)
        if len(self._event_messages) > EVENT_MESSAGES_KEPT:
            self._event_messages.clear()
        self._event_messages[view.info.event_id] = (view, message)
        return message

    async def CreateHold(
        self, request: event_pb2.CreateHoldRequest, context: grpc.aio.ServicerContext
    ) -> event_pb2.Hold:
        best = None
        if request.HasField("best_available"):
            wish = request.best_available
            best = (_tier(wish.tier, "best_available.tier"), wish.quantity)
        view = await self._holds.create(
            caller(), request.event_id, list(request.seat_ids), best, request.request_id
        )
        return hold_to_proto(view)

    async def GetHold(
        self, request: event_pb2.GetHoldRequest, context: grpc.aio.ServicerContext
    ) -> event_pb2.Hold:
        return hold_to_proto(await self._holds.get(caller(), request.hold_id))

    async def RenewHold(
        self, request: event_pb2.RenewHoldRequest, context: grpc.aio.ServicerContext
    ) -> event_pb2.Hold:
        return hold_to_proto(await self._holds.renew(caller(), request.hold_id))

    async def ReleaseHold(
        self, request: event_pb2.ReleaseHoldRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self._holds.release(caller(), request.hold_id)
        return empty_pb2.Empty()

    async def ClaimHold(
        self, request: event_pb2.ClaimHoldRequest, context: grpc.aio.ServicerContext
    ) -> event_pb2.LockSeatResponse:
        held = await self._holds.claim(request.hold_id, request.user_id, request.booking_id)
        return lock_response(held)

    async def GetSalesReport(
        self, request: event_pb2.GetSalesReportRequest, context: grpc.aio.ServicerContext
    ) -> event_pb2.SalesReport:
        return sales_to_proto(await self._sales.report(caller(), request.event_id))

    async def CreateEvent(
        self, request: event_pb2.CreateEventRequest, context: grpc.aio.ServicerContext
    ) -> event_pb2.Event:
        event = request.event
        view = await self._events.create_event(
            caller(),
            event.title,
            event.description,
            event.venue,
            _time_field(event, "starts_at"),
            _plans(event),
            _state(event.state, "event.state"),
            _time_field(event, "sale_start_time"),
            _time_field(event, "sale_end_time"),
            event.max_tickets_per_user,
        )
        return event_to_proto(view)

    async def UpdateEvent(
        self, request: event_pb2.UpdateEventRequest, context: grpc.aio.ServicerContext
    ) -> event_pb2.Event:
        event = request.event
        mask = list(request.update_mask.paths)
        changes = EventChanges(
            title=event.title,
            description=event.description,
            venue=event.venue,
            starts_at=_time_field(event, "starts_at"),
            sale_start_time=_time_field(event, "sale_start_time"),
            sale_end_time=_time_field(event, "sale_end_time"),
            tiers=tuple(_plans(event)) if "tiers" in mask else (),
            max_tickets_per_user=event.max_tickets_per_user,
        )
        view = await self._events.update_event(caller(), event.event_id, changes, mask, event.etag)
        return event_to_proto(view)

    async def CancelEvent(
        self, request: event_pb2.CancelEventRequest, context: grpc.aio.ServicerContext
    ) -> event_pb2.Event:
        view = await self._events.cancel_event(
            caller(), request.event_id, request.reason, request.etag
        )
        return event_to_proto(view)

    async def PublishEvent(
        self, request: event_pb2.PublishEventRequest, context: grpc.aio.ServicerContext
    ) -> event_pb2.Event:
        view = await self._events.publish_event(caller(), request.event_id)
        return event_to_proto(view)

    async def GetEvent(
        self, request: event_pb2.GetEventRequest, context: grpc.aio.ServicerContext
    ) -> event_pb2.Event:
        view = await self._events.get_event(optional_caller(), request.event_id)
        # Availability may be a second old anyway (a replica's snapshot), so
        # browsers and caches in front of Envoy may keep it that long too.
        await context.send_initial_metadata((("cache-control", AVAILABILITY_CACHE_CONTROL),))
        return self._event_message(view)

    async def ListEvents(
        self, request: event_pb2.ListEventsRequest, context: grpc.aio.ServicerContext
    ) -> event_pb2.ListEventsResponse:
        search = EventSearch(
            include_started=request.include_started,
            organizer_id=request.organizer_id or None,
            starts_after=_time_field(request, "starts_after"),
            starts_before=_time_field(request, "starts_before"),
            state=_state(request.state, "state"),
            query=request.query.strip(),
        )
        views, token = await self._events.list_events(
            optional_caller(), request.page_size, request.page_token, search
        )
        return event_pb2.ListEventsResponse(
            events=[event_to_proto(v) for v in views], next_page_token=token
        )

    async def ListSeats(
        self, request: event_pb2.ListSeatsRequest, context: grpc.aio.ServicerContext
    ) -> event_pb2.ListSeatsResponse:
        status = None
        if request.status != event_pb2.SEAT_STATUS_UNSPECIFIED:
            status = _STATUS_FROM_PROTO.get(request.status)
            if status is None:
                raise bad_field("status", "is not a known seat status")
        seats, token = await self._events.list_seats(
            request.event_id,
            _tier(request.tier, "tier"),
            status,
            request.page_size,
            request.page_token,
            optional_caller(),
        )
        return event_pb2.ListSeatsResponse(
            seats=[seat_to_proto(s.seat, s.plan, s.status) for s in seats], next_page_token=token
        )

    async def LockSeat(
        self, request: event_pb2.LockSeatRequest, context: grpc.aio.ServicerContext
    ) -> event_pb2.LockSeatResponse:
        held = await self._events.lock(
            request.event_id,
            request.seat_ids,
            request.owner,
            request.ttl_seconds,
            request.user_id,
        )
        return lock_response(held)

    async def ReleaseSeat(
        self, request: event_pb2.ReleaseSeatRequest, context: grpc.aio.ServicerContext
    ) -> event_pb2.ReleaseSeatResponse:
        released = await self._events.release(
            request.event_id, request.seat_ids, request.owner_token
        )
        return event_pb2.ReleaseSeatResponse(released_seat_ids=released)

    async def ConfirmSeats(
        self, request: event_pb2.ConfirmSeatsRequest, context: grpc.aio.ServicerContext
    ) -> event_pb2.ConfirmSeatsResponse:
        info, seats = await self._events.confirm(
            request.event_id,
            request.seat_ids,
            request.owner_token,
            request.fencing_token,
            request.booking_id,
        )
        return event_pb2.ConfirmSeatsResponse(
            seats=[seat_to_proto(s, info.plan_for(s), SeatStatus.SOLD) for s in seats]
        )

    async def ReturnSeats(
        self, request: event_pb2.ReturnSeatsRequest, context: grpc.aio.ServicerContext
    ) -> event_pb2.ReturnSeatsResponse:
        returned = await self._events.return_seats(request.event_id, request.booking_id)
        return event_pb2.ReturnSeatsResponse(returned_seat_ids=[s.seat_id for s in returned])
