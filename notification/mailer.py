"""Sending email over SMTP (plain, or STARTTLS with a login)."""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage


def _why(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class Mailer:
    host: str
    port: int
    username: str = ""
    password: str = ""
    starttls: bool = False
    timeout_seconds: float = 10.0

    def send(self, emails: Sequence[EmailMessage]) -> list[str | None]:
        """Sends over one connection; per email, None if the server took it, else why not."""
        try:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_seconds)
        except (OSError, smtplib.SMTPException) as exc:
            return [_why(exc)] * len(emails)
        results: list[str | None] = []
        try:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password)
            for email in emails:
                try:
                    smtp.send_message(email)
                    results.append(None)
                except smtplib.SMTPServerDisconnected:
                    raise
                except smtplib.SMTPException as exc:  # this email refused, the next may pass
                    results.append(_why(exc))
        except (OSError, smtplib.SMTPException) as exc:
            # The connection is gone: what was taken stays taken, the rest failed.
            results += [_why(exc)] * (len(emails) - len(results))
        finally:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                smtp.quit()
        return results
