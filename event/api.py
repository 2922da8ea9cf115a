"""gRPC entry point of the event service: proto in, use case, proto out."""

from __future__ import annotations

import grpc

from event.domain import EventInfo, SeatRef, Tier, TierPlan
from event.repository import TierSales
from event.sales import SalesReports
from event.service import EventUseCases, EventView, SeatStatus
from runtime import timestamps
from runtime.errors import bad_field
from runtime.identity import caller
from ticketing.common.v1 import money_pb2
from ticketing.event.v1 import event_pb2, event_pb2_grpc

_STATUS_TO_PROTO = {
    SeatStatus.AVAILABLE: event_pb2.SEAT_STATUS_AVAILABLE,
    SeatStatus.HELD: event_pb2.SEAT_STATUS_HELD,
    SeatStatus.SOLD: event_pb2.SEAT_STATUS_SOLD,
}
_STATUS_FROM_PROTO = {v: k for k, v in _STATUS_TO_PROTO.items()}
AVAILABILITY_CACHE_CONTROL = "public, max-age=1"


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


def event_to_proto(view: EventView) -> event_pb2.Event:
    info = view.info
    return event_pb2.Event(
        event_id=str(info.event_id),
        title=info.title,
        description=info.description,
        venue=info.venue,
        starts_at=timestamps.to_proto(info.starts_at),
        organizer_id=str(info.organizer_id),
        create_time=timestamps.to_proto(info.create_time),
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


def sales_to_proto(info: EventInfo, tiers: list[TierSales]) -> event_pb2.SalesReport:
    def total(field: str) -> money_pb2.Money:
        return money_pb2.Money(
            currency_code=info.currency, amount_minor=sum(getattr(t, field) for t in tiers)
        )

    gross, refunded = total("gross_minor"), total("refunded_minor")
    return event_pb2.SalesReport(
        event_id=str(info.event_id),
        tiers=[
            event_pb2.TierSales(
                tier=t.tier.value,
                tickets_sold=t.tickets_sold,
                tickets_refunded=t.tickets_refunded,
                gross=money_pb2.Money(currency_code=t.currency, amount_minor=t.gross_minor),
                refunded=money_pb2.Money(currency_code=t.currency, amount_minor=t.refunded_minor),
            )
            for t in tiers
        ],
        tickets_sold=sum(t.tickets_sold for t in tiers),
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
    def __init__(self, use_cases: EventUseCases, sales: SalesReports) -> None:
        self._events = use_cases
        self._sales = sales

    async def GetSalesReport(
        self, request: event_pb2.GetSalesReportRequest, context: grpc.aio.ServicerContext
    ) -> event_pb2.SalesReport:
        info, tiers = await self._sales.report(caller(), request.event_id)
        return sales_to_proto(info, tiers)

    async def CreateEvent(
        self, request: event_pb2.CreateEventRequest, context: grpc.aio.ServicerContext
    ) -> event_pb2.Event:
        event = request.event
        starts_at = timestamps.from_proto(event.starts_at) if event.HasField("starts_at") else None
        view = await self._events.create_event(
            caller(), event.title, event.description, event.venue, starts_at, _plans(event)
        )
        return event_to_proto(view)

    async def GetEvent(
        self, request: event_pb2.GetEventRequest, context: grpc.aio.ServicerContext
    ) -> event_pb2.Event:
        view = await self._events.get_event(request.event_id)
        # Availability may be a second old anyway (a replica's snapshot), so
        # browsers and caches in front of Envoy may keep it that long too.
        await context.send_initial_metadata((("cache-control", AVAILABILITY_CACHE_CONTROL),))
        return event_to_proto(view)

    async def ListEvents(
        self, request: event_pb2.ListEventsRequest, context: grpc.aio.ServicerContext
    ) -> event_pb2.ListEventsResponse:
        views, token = await self._events.list_events(
            request.page_size, request.page_token, request.include_started
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
        )
        return event_pb2.ListSeatsResponse(
            seats=[seat_to_proto(s.seat, s.plan, s.status) for s in seats], next_page_token=token
        )

    async def LockSeat(
        self, request: event_pb2.LockSeatRequest, context: grpc.aio.ServicerContext
    ) -> event_pb2.LockSeatResponse:
        held = await self._events.lock(
            request.event_id, request.seat_ids, request.owner, request.ttl_seconds
        )
        return event_pb2.LockSeatResponse(
            owner_token=held.owner,
            fencing_token=held.hold.fencing_token,
            expire_time=timestamps.from_millis(held.hold.expire_ms),
            seats=[seat_to_proto(s, held.event.plan_for(s), SeatStatus.HELD) for s in held.seats],
            event=summary(held.event),
        )

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
