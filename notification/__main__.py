"""`python -m notification [serve|migrate|keys]`."""

from __future__ import annotations

from pathlib import Path

from notification.api import NotificationServicer
from notification.mailer import Mailer
from notification.service import NotificationUseCases
from notification.tickets import TicketSigner
from runtime import cli, db
from runtime.config import REPO_ROOT, Settings, env_int, env_str
from runtime.consumer import Consumer, one_at_a_time
from runtime.server import GrpcService
from runtime.signing import KeyRing, ensure_key
from ticketing.notification.v1 import notification_pb2, notification_pb2_grpc

QUEUE = "notification"
ROUTING_KEYS = ("user.registered", "booking.confirmed", "booking.failed", "booking.cancelled")


def ticket_keys_dir() -> Path:
    return Path(env_str("TICKET_KEYS_DIR", str(REPO_ROOT / "var" / "keys" / "tickets")))


async def build(settings: Settings) -> GrpcService:
    engine = db.async_engine(settings)
    mailer = Mailer(
        host=env_str("SMTP_HOST", "127.0.0.1"),
        port=env_int("SMTP_PORT", 1025),
        username=env_str("SMTP_USER", ""),
        password=env_str("SMTP_PASSWORD", ""),
        starttls=env_str("SMTP_STARTTLS", "false").lower() in ("1", "true", "yes"),
    )
    use_cases = NotificationUseCases(
        engine,
        mailer,
        TicketSigner(KeyRing(ticket_keys_dir())),
        env_str("MAIL_FROM", "Ticketing <tickets@ticketing.example.com>"),
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
            one_at_a_time(use_cases.record),
            prefetch=env_int("NOTIFICATION_PREFETCH", 32),
        ),
    ]
    return service


cli.main("notification", build, {"keys": lambda settings: ensure_key(ticket_keys_dir())})
