"""AIP-158 pagination: page sizes and opaque page tokens.

A token comes back from the client, so it is input like any other: whatever
it decodes to, anything but a cursor this module made is INVALID_ARGUMENT
on `page_token`, never an exception deeper down.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from runtime.errors import ServiceError, bad_field

T = TypeVar("T")
# Our tokens are under 100 characters; anything much longer is not one of them.
MAX_TOKEN_LENGTH = 512


def _not_a_token() -> ServiceError:
    return bad_field("page_token", "is not a token from a previous page")


def page_size(requested: int, default: int = 20, maximum: int = 100) -> int:
    if requested < 0:
        raise bad_field("page_size", "must not be negative")
    return min(requested or default, maximum)


def encode_token(cursor: dict[str, Any]) -> str:
    raw = json.dumps(cursor, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> dict[str, Any]:
    """The cursor of a token from encode_token; {} for the first page."""
    if not token:
        return {}
    if len(token) > MAX_TOKEN_LENGTH:
        raise _not_a_token()
    try:
        cursor = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise _not_a_token() from exc
    if not isinstance(cursor, dict) or not cursor:
        raise _not_a_token()
    return cursor


def cursor_text(token: str, key: str) -> str | None:
    """The string a token's cursor keeps under `key`; None for the first page."""
    cursor = decode_token(token)
    if not cursor:
        return None
    value = cursor.get(key)
    if not isinstance(value, str):
        raise _not_a_token()
    return value


def keyset_token(moment: datetime, ident: uuid.UUID) -> str:
    """A page token for lists ordered by (time, id)."""
    return encode_token({"t": moment.isoformat(), "id": str(ident)})


def decode_keyset(token: str) -> tuple[datetime, uuid.UUID] | None:
    """The (time, id) a keyset_token names; None for the first page."""
    cursor = decode_token(token)
    if not cursor:
        return None
    moment, ident = cursor.get("t"), cursor.get("id")
    if not isinstance(moment, str) or not isinstance(ident, str):
        raise _not_a_token()
    try:
        when, key = datetime.fromisoformat(moment), uuid.UUID(ident)
    except ValueError as exc:
        raise _not_a_token() from exc
    # Every time we page by is timestamptz; a naive one was not made here.
    if when.tzinfo is None:
        raise _not_a_token()
    return when, key


def keyset_page(
    found: list[T], limit: int, key: Callable[[T], tuple[datetime, uuid.UUID]]
) -> tuple[list[T], str]:
    """The page of rows fetched with `limit + 1`, and the next page's token ('' at the end)."""
    page = found[:limit]
    return page, keyset_token(*key(page[-1])) if len(found) > limit else ""
