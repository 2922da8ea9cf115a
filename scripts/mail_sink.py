"""A development SMTP server that keeps every email: as `.eml` files in a
directory (open them in any mail client) and, in-process, in a list the
tests read.

    python scripts/mail_sink.py --port 1025 --dir var/mail
"""

from __future__ import annotations

import argparse
import email
import email.policy
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class _Keeper:
    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.messages: list[EmailMessage] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw: bytes = envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        with self.lock:
            self.messages.append(message)  # type: ignore[arg-type]
            count = len(self.messages)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / f"{time.strftime('%Y%m%d-%H%M%S')}-{count:05d}.eml").write_bytes(raw)
        return "250 OK"


class MailSink:
    def __init__(self, port: int, directory: Path | None = None) -> None:
        self.port = port
        self._keeper = _Keeper(directory)
        self._controller: Controller | None = None

    @property
    def messages(self) -> list[EmailMessage]:
        with self._keeper.lock:
            return list(self._keeper.messages)

    def start(self) -> MailSink:
        self._controller = Controller(self._keeper, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", type=Path, default=Path("var/mail"))
    args = parser.parse_args()
    MailSink(args.port, args.dir).start()
    print(f"SMTP sink on 127.0.0.1:{args.port}, saving to {args.dir}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
