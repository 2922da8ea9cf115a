"""Checks every request gets before any service code sees it.

The services' own rules (domain.py) say what a valid seat id or event is;
these say what no field of any request may ever be, whatever the RPC:
undecodable, longer than any field needs, or carrying NUL and control
characters (PostgreSQL refuses NUL in text, and control characters have no
business in names, ids or titles). They also refuse secrets in a URL:
Envoy's transcoder maps query parameters onto request fields, so
`POST /v1/auth/login?password=...` would log the password in every proxy
and browser history on its way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from runtime.errors import FieldViolation, invalid_argument

# Far above any field's own limit (descriptions are the longest, at 5,000), so
# it only cuts off what no domain rule would read anyway.
MAX_TEXT_CHARS = 10_000
# Free text where a line break or tab is content, not an attack.
MULTILINE_FIELDS = frozenset({"description"})
# Character classes (the OpenAPI document states them too): control characters,
# and those of them that are not a tab or a line break.
CONTROL_CHARS = r"\x00-\x1f\x7f-\x9f"
CONTROL_CHARS_BUT_WHITESPACE = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
_CONTROL = re.compile(f"[{CONTROL_CHARS}]")
_CONTROL_BUT_WHITESPACE = re.compile(f"[{CONTROL_CHARS_BUT_WHITESPACE}]")

# Set by Envoy's transcoder: the HTTP path and query the request came in on.
ORIGINAL_PATH_HEADER = "x-envoy-original-path"
# Query parameter names (lowercased, underscores dropped, per dotted segment)
# that name a secret or a part of one.
SECRET_PARAMETERS = frozenset(
    {
        "password",
        "newpassword",
        "currentpassword",
        "refreshtoken",
        "accesstoken",
        "paymentmethod",
        "cardnumber",
        "cvc",
        "code",  # an emailed one-time code
    }
)


class Undecodable:
    """Stands in for a request whose bytes are not its message (e.g. a string
    field that is not UTF-8, as a `%ff` in a query parameter becomes)."""


UNDECODABLE = Undecodable()


def tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """The deserializer, answering UNDECODABLE instead of raising: gRPC would
    turn the DecodeError into UNKNOWN (HTTP 500) before any interceptor ran."""
    if deserialize is None:
        return None

    def parse(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except DecodeError:
            return UNDECODABLE

    return parse


def check_request(request: Any, metadata: tuple[tuple[str, str | bytes], ...] | None) -> None:
    """Raises INVALID_ARGUMENT, naming the fields, for what no request may carry."""
    if request is UNDECODABLE:
        raise invalid_argument(
            [FieldViolation("request", "is not a valid message (a text field is not UTF-8?)")]
        )
    secrets = list(_secrets_in_url(metadata))
    if secrets:
        raise invalid_argument(secrets, reason="SECRET_IN_URL")
    if isinstance(request, Message):
        problems = list(text_violations(request))
        if problems:
            raise invalid_argument(problems)


def text_violations(message: Message, prefix: str = "") -> Iterator[FieldViolation]:
    """Every string field of the message (nested ones too) that breaks the rules."""
    for field, value in message.ListFields():
        name = prefix + field.name
        values = list(value) if field.is_repeated else [value]
        if field.type == FieldDescriptor.TYPE_STRING:
            for i, text in enumerate(values):
                problem = text_problem(text, field.name in MULTILINE_FIELDS)
                if problem:
                    yield FieldViolation(f"{name}[{i}]" if field.is_repeated else name, problem)
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not (
            field.message_type.GetOptions().map_entry
        ):
            for i, item in enumerate(values):
                where = f"{name}[{i}]" if field.is_repeated else name
                yield from text_violations(item, where + ".")


def text_problem(text: str, multiline: bool = False) -> str | None:
    if len(text) > MAX_TEXT_CHARS:
        return f"must be at most {MAX_TEXT_CHARS} characters"
    if "\x00" in text:
        return "must not contain NUL characters"
    if (_CONTROL_BUT_WHITESPACE if multiline else _CONTROL).search(text):
        return "must not contain control characters"
    return None


def _secrets_in_url(
    metadata: tuple[tuple[str, str | bytes], ...] | None,
) -> Iterator[FieldViolation]:
    path = next(
        (v for k, v in metadata or () if k == ORIGINAL_PATH_HEADER and isinstance(v, str)), ""
    )
    query = urlsplit(path).query
    if not query:
        return
    for name, _ in parse_qsl(query, keep_blank_values=True):
        segments = name.lower().replace("_", "").split(".")
        if SECRET_PARAMETERS.intersection(segments):
            yield FieldViolation(name, "is a secret: send it in the request body, never in the URL")
