"""`python -m event [serve|migrate]`."""

from __future__ import annotations

import contextlib

from event.api import EventServicer
from event.holds import HoldStore, reporting_holds
from event.sales import SalesReports
from event.service import EventUseCases
from runtime import cli, db
from runtime.config import Settings, env_int
from runtime.consumer import Consumer
from runtime.server import GrpcService
from ticketing.event.v1 import event_pb2, event_pb2_grpc


async def build(settings: Settings) -> GrpcService:
    engine = db.async_engine(settings)
    holds = HoldStore.connect(settings.redis_url)
    use_cases = EventUseCases(engine, holds, env_int("HOLD_TTL_SECONDS", 300))
    sales = SalesReports(engine, use_cases)
    service = GrpcService(settings)
    service.add(
        event_pb2.DESCRIPTOR.services_by_name["EventService"],
        event_pb2_grpc.add_EventServiceServicer_to_server,
        EventServicer(use_cases, sales),
    )
    service.workers += [
        db.disposing(engine),
        contextlib.aclosing(holds),
        reporting_holds(holds),
        Consumer(settings.amqp_url, sales.QUEUE, sales.ROUTING_KEYS, sales.record),
    ]
    return service


cli.main("event", build)
