"""AIP-158 pagination: page sizes and opaque page tokens."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from runtime.errors import bad_field

T = TypeVar("T")


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
    try:
        cursor = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise bad_field("page_token", "is not a token from a previous page") from exc
    if not isinstance(cursor, dict):
        raise bad_field("page_token", "is not a token from a previous page")
    return cursor


def keyset_token(moment: datetime, ident: uuid.UUID) -> str:
    """A page token for lists ordered by (time, id)."""
    return encode_token({"t": moment.isoformat(), "id": str(ident)})


def decode_keyset(token: str) -> tuple[datetime, uuid.UUID] | None:
    """The (time, id) a keyset_token names; None for the first page."""
    cursor = decode_token(token)
    if not cursor:
        return None
    try:
        return datetime.fromisoformat(cursor["t"]), uuid.UUID(cursor["id"])
    except (KeyError, ValueError, TypeError) as exc:
        raise bad_field("page_token", "is not a token from a previous page") from exc


def keyset_page(
    found: list[T], limit: int, key: Callable[[T], tuple[datetime, uuid.UUID]]
) -> tuple[list[T], str]:
    """The page of rows fetched with `limit + 1`, and the next page's token ('' at the end)."""
    page = found[:limit]
    return page, keyset_token(*key(page[-1])) if len(found) > limit else ""
