"""The one way a service connects to Redis."""

from __future__ import annotations

import redis.asyncio as redis


def redis_client(url: str) -> redis.Redis:
    # Short timeouts: with Redis away, callers hear so at once, never hang.
    return redis.Redis.from_url(
        url, socket_timeout=1.0, socket_connect_timeout=1.0, decode_responses=True
    )
