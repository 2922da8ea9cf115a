"""`python -m event [serve|migrate]`."""

from __future__ import annotations

import contextlib

from event.api import EventServicer
from event.checkout import HoldUseCases
from event.holds import HoldStore, reporting_holds
from event.refund_progress import RefundProgress
from event.repository import SalePath
from event.sales import SalesReports
from event.service import EventUseCases
from event.settings import EventSettings
from runtime import cli, db
from runtime.consumer import Consumer
from runtime.outbox import OutboxRelay
from runtime.pg import Database
from runtime.server import GrpcService
from ticketing.event.v1 import event_pb2, event_pb2_grpc


async def build(settings: EventSettings) -> GrpcService:
    engine = db.async_engine(settings)
    database = Database(settings.database_url, settings.db_pool_size)
    sale_path = SalePath(database)
    holds = HoldStore.connect(settings.redis_url)
    use_cases = EventUseCases(
        engine,
        sale_path,
        holds,
        settings.hold_ttl_seconds,
        availability_cache_seconds=settings.availability_cache_seconds,
        event_cache_seconds=settings.event_cache_seconds,
    )
    sales = SalesReports(engine, sale_path, use_cases)
    service = GrpcService(settings)
    service.add(
        event_pb2.DESCRIPTOR.services_by_name["EventService"],
        event_pb2_grpc.add_EventServiceServicer_to_server,
        EventServicer(
            use_cases,
            sales,
            HoldUseCases(
                use_cases, holds, settings.hold_ttl_seconds, settings.require_verified_email
            ),
        ),
    )
    service.workers += [
        db.disposing(engine),
        database,
        contextlib.aclosing(holds),
        reporting_holds(holds),
        Consumer(settings.amqp_url, sales.QUEUE, sales.ROUTING_KEYS, sales.record),
        Consumer(
            settings.amqp_url,
            RefundProgress.QUEUE,
            RefundProgress.ROUTING_KEYS,
            RefundProgress(use_cases).record,
        ),
        # Announces cancellations (event.cancelled) written with them.
        OutboxRelay(settings.database_url, settings.amqp_url),
    ]
    return service


cli.main("event", EventSettings, build)
