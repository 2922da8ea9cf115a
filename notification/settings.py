"""The notification service's settings, read and checked once at start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from notification.mailer import Mailer
from runtime.config import Env, Settings, common, ticket_keys_dir


@dataclass(frozen=True)
class NotificationSettings(Settings):
    ticket_keys_dir: Path
    mailer: Mailer
    mail_from: str
    prefetch: int  # broker messages taken at once

    @classmethod
    def read(cls, service: str, env: Env) -> NotificationSettings:
        return cls(
            **common(service, env),
            ticket_keys_dir=ticket_keys_dir(env),
            mailer=Mailer(
                host=env.text("SMTP_HOST", "127.0.0.1"),
                port=env.integer("SMTP_PORT", 1025, minimum=1, maximum=65535),
                username=env.text("SMTP_USER", ""),
                password=env.text("SMTP_PASSWORD", ""),
                starttls=env.flag("SMTP_STARTTLS", False),
            ),
            mail_from=env.text("MAIL_FROM", "Ticketing <tickets@ticketing.example.com>"),
            prefetch=env.integer("NOTIFICATION_PREFETCH", 32, minimum=1, maximum=1000),
        )
