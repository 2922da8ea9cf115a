"""Sending email over SMTP (plain, or STARTTLS with a login)."""

from __future__ import annotations

import contextlib
import smtplib
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import Message


def _why(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


@dataclass
class Mailer:
    host: str
    port: int
    username: str = ""
    password: str = ""
    starttls: bool = False
    timeout_seconds: float = 10.0
    # Kept open from one batch to the next: connecting, greeting and quitting
    # cost about half as much CPU again as sending an email. An idle one is
    # left to the server's timeout, or closes when the process ends.
    _smtp: smtplib.SMTP | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def send(self, emails: Sequence[Message]) -> list[str | None]:
        """Sends over one connection; per email, None if the server took it, else why not."""
        with self._lock:
            try:
                smtp = self._connection()
            except (OSError, smtplib.SMTPException) as exc:
                return [_why(exc)] * len(emails)
            results: list[str | None] = []
            try:
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
                self._hang_up()
            return results

    def close(self) -> None:
        """Says QUIT, for a caller done sending."""
        with self._lock:
            self._hang_up()

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is not None:
            # The server may have timed the idle connection out, or restarted.
            with contextlib.suppress(OSError, smtplib.SMTPException):
                if self._smtp.noop()[0] == 250:
                    return self._smtp
            self._hang_up()
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_seconds)
        try:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password)
        except BaseException:
            smtp.close()
            raise
        self._smtp = smtp
        return smtp

    def _hang_up(self) -> None:
        if self._smtp is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self._smtp.quit()
            self._smtp.close()
            self._smtp = None
