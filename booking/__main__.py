"""`python -m booking [serve|migrate]`."""

from __future__ import annotations

import contextlib

from booking.api import BookingServicer
from booking.clients import Downstream
from booking.repository import Ledger
from booking.service import BookingUseCases
from runtime import cli
from runtime.config import Settings, env_float, env_int, grpc_target
from runtime.outbox import OutboxRelay
from runtime.pg import Database
from runtime.server import GrpcService
from runtime.tls import TlsFiles
from ticketing.booking.v1 import booking_pb2, booking_pb2_grpc


async def build(settings: Settings) -> GrpcService:
    database = Database(settings.database_url, settings.db_pool_size)
    downstream = Downstream(
        grpc_target("event"),
        grpc_target("payment"),
        env_float("DOWNSTREAM_TIMEOUT_SECONDS", 5.0),
        TlsFiles.for_workload(settings.service),
    )
    use_cases = BookingUseCases(
        Ledger(database),
        downstream,
        env_int("HOLD_TTL_SECONDS", 300),
        sweep_grace_seconds=env_float("SWEEP_GRACE_SECONDS", 30.0),
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
        use_cases.sweeping(env_float("SWEEP_INTERVAL_SECONDS", 15.0)),
    ]
    return service


cli.main("booking", build)
