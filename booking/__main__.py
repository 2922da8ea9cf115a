"""`python -m booking [serve|migrate|keys]`."""

from __future__ import annotations

import contextlib

from booking.api import BookingServicer
from booking.erasure import AccountErasure
from booking.grpc_gateways import Downstream
from booking.refunds import EventRefunds
from booking.repository import PgAccountErasure, PgCheckIns, PgEventRefunds, PgLedger
from booking.service import BookingUseCases
from booking.settings import BookingSettings
from booking.tickets import TicketUseCases
from runtime import cli
from runtime.consumer import Consumer
from runtime.outbox import OutboxRelay
from runtime.pg import Database
from runtime.server import GrpcService
from runtime.signing import KeyRing, ensure_key
from runtime.tickets import TicketSigner
from runtime.tls import TlsFiles
from ticketing.booking.v1 import booking_pb2, booking_pb2_grpc

# How often the refunds of cancelled events are looked at besides when one
# arrives: for leases that lapsed and bookings that settled meanwhile.
REFUND_PASS_SECONDS = 1.0


async def build(settings: BookingSettings) -> GrpcService:
    database = Database(settings.database_url, settings.db_pool_size)
    downstream = Downstream(
        settings.event_target,
        settings.payment_target,
        settings.retry.call_timeout_seconds,
        TlsFiles.for_workload(settings.service),
    )
    ledger = PgLedger(database)
    use_cases = BookingUseCases(
        ledger,
        downstream.seats,
        downstream.payments,
        settings.hold_ttl_seconds,
        settings.retry,
        sweep_grace_seconds=settings.sweep_grace_seconds,
        require_verified_email=settings.require_verified_email,
    )
    refunds = EventRefunds(
        PgEventRefunds(database),
        use_cases,
        settings.event_refund_lease_seconds,
        settings.event_refund_concurrency,
        settings.event_refund_batch_size,
    )
    service = GrpcService(settings)
    service.add(
        booking_pb2.DESCRIPTOR.services_by_name["BookingService"],
        booking_pb2_grpc.add_BookingServiceServicer_to_server,
        BookingServicer(
            use_cases,
            TicketUseCases(
                ledger,
                PgCheckIns(database),
                downstream.organizers,
                TicketSigner(KeyRing(settings.ticket_keys_dir)),
            ),
        ),
    )
    service.workers += [
        database,
        contextlib.aclosing(downstream),
        OutboxRelay(settings.database_url, settings.amqp_url),
        use_cases.working(settings.sweep_interval_seconds),
        Consumer(settings.amqp_url, refunds.QUEUE, refunds.ROUTING_KEYS, refunds.record),
        refunds.running(REFUND_PASS_SECONDS),
    ]
    erasure = AccountErasure(PgAccountErasure(database))
    service.workers.append(
        Consumer(settings.amqp_url, erasure.QUEUE, erasure.ROUTING_KEYS, erasure.record)
    )
    return service


# The ticket keys are the notification service's; either makes them if missing.
cli.main(
    "booking",
    BookingSettings,
    build,
    {"keys": lambda settings: ensure_key(settings.ticket_keys_dir)},
)
