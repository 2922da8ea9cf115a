"""Structured (JSON lines) logging that carries the request id."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
# PostgreSQL's error DETAIL quotes row values ("Key (email)=(...) already exists");
# psycopg puts it in the exception's text, so it would reach the log with it.
_PG_DETAIL = re.compile(r"DETAIL: .*")


def _without_row_values(text: str) -> str:
    return _PG_DETAIL.sub("DETAIL: (hidden: it may quote row values)", text)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "msg": _without_row_values(record.getMessage()),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        entry.update((key, value) for key, value in record.__dict__.items() if key not in _RESERVED)
        if record.exc_info:
            entry["exc"] = _without_row_values(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


def configure(service: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("pika", "sqlalchemy.engine", "aiosmtpd", "mail.log", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
