"""`python -m booking [serve|migrate]`."""

from __future__ import annotations

import contextlib

from booking.api import BookingServicer
from booking.grpc_gateways import Downstream
from booking.repository import PgLedger
from booking.service import BookingUseCases
from booking.settings import BookingSettings
from runtime import cli
from runtime.outbox import OutboxRelay
from runtime.pg import Database
from runtime.server import GrpcService
from runtime.tls import TlsFiles
from ticketing.booking.v1 import booking_pb2, booking_pb2_grpc


async def build(settings: BookingSettings) -> GrpcService:
    database = Database(settings.database_url, settings.db_pool_size)
    downstream = Downstream(
        settings.event_target,
        settings.payment_target,
        settings.retry.call_timeout_seconds,
        TlsFiles.for_workload(settings.service),
    )
    use_cases = BookingUseCases(
        PgLedger(database),
        downstream.seats,
        downstream.payments,
        settings.hold_ttl_seconds,
        settings.retry,
        sweep_grace_seconds=settings.sweep_grace_seconds,
    )
    service = GrpcService(settings)
    service.add(
        booking_pb2.DESCRIPTOR.services_by_name["BookingService"],
        booking_pb2_grpc.add_BookingServiceServicer_to_server,
        BookingServicer(use_cases),
    )
    service.workers += [
        database,
        contextlib.aclosing(downstream),
        OutboxRelay(settings.database_url, settings.amqp_url),
        use_cases.sweeping(settings.sweep_interval_seconds),
    ]
    return service


cli.main("booking", BookingSettings, build)
