"""`python -m notification [serve|migrate|keys]`."""

from __future__ import annotations

from notification.api import NotificationServicer
from notification.service import NotificationUseCases
from notification.settings import NotificationSettings
from runtime import cli, db
from runtime.consumer import Consumer
from runtime.server import GrpcService
from runtime.signing import KeyRing, ensure_key
from runtime.tickets import TicketSigner
from ticketing.notification.v1 import notification_pb2, notification_pb2_grpc

QUEUE = "notification"
ROUTING_KEYS = (
    "user.registered",
    "user.verification_requested",
    "user.password_reset_requested",
    "booking.confirmed",
    "booking.failed",
    "booking.cancelled",
    "user.deleted",
)


async def build(settings: NotificationSettings) -> GrpcService:
    engine = db.async_engine(settings)
    use_cases = NotificationUseCases(
        engine,
        settings.mailer,
        TicketSigner(KeyRing(settings.ticket_keys_dir)),
        settings.mail_from,
    )
    service = GrpcService(settings)
    service.add(
        notification_pb2.DESCRIPTOR.services_by_name["NotificationService"],
        notification_pb2_grpc.add_NotificationServiceServicer_to_server,
        NotificationServicer(use_cases),
    )
    service.workers += [
        db.disposing(engine),
        use_cases.delivering(),
        Consumer(
            settings.amqp_url,
            QUEUE,
            ROUTING_KEYS,
            use_cases.record,
            prefetch=settings.prefetch,
        ),
    ]
    return service


cli.main(
    "notification",
    NotificationSettings,
    build,
    {"keys": lambda settings: ensure_key(settings.ticket_keys_dir)},
)
