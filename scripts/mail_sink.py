"""A development SMTP server that keeps every email: as `.eml` files in a
directory (open them in any mail client), each written as it arrives, so the
sink's memory stays the same however many arrive; and, for the tests that run
it in-process, also in a list they read.

    python scripts/mail_sink.py --port 1025 --dir var/mail
"""

from __future__ import annotations

import argparse
import email
import email.policy
import itertools
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class _Keeper:
    def __init__(self, directory: Path | None, in_memory: bool) -> None:
        self.directory = directory
        self.in_memory = in_memory
        self.messages: list[EmailMessage] = []
        self.lock = threading.Lock()
        self._numbers = itertools.count(1)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw: bytes = envelope.content
        with self.lock:
            number = next(self._numbers)
            if self.in_memory:
                message = email.message_from_bytes(raw, policy=email.policy.default)
                self.messages.append(message)  # type: ignore[arg-type]
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{time.strftime('%Y%m%d-%H%M%S')}-{number:05d}.eml"
            # Renamed into place whole, so a reader never sees half an email.
            part = path.with_suffix(".part")
            part.write_bytes(raw)
            part.replace(path)
        return "250 OK"


class MailSink:
    """`directory`: where each email is written; `in_memory`: also kept in
    `messages` (the tests' sink; `make up`'s writes files only)."""

    def __init__(self, port: int, directory: Path | None = None, in_memory: bool = True) -> None:
        self.port = port
        self._keeper = _Keeper(directory, in_memory)
        self._controller: Controller | None = None

    @property
    def directory(self) -> Path | None:
        return self._keeper.directory

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
    MailSink(args.port, args.dir, in_memory=False).start()
    print(f"SMTP sink on 127.0.0.1:{args.port}, saving to {args.dir}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
