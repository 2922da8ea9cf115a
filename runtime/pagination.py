"""AIP-158 pagination: page sizes and opaque page tokens."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from runtime.errors import bad_field


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
