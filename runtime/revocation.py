"""Access tokens revoked everywhere within seconds.

Access tokens are checked by signature alone, so a logout, a role change or
a reused refresh token would otherwise leave the user's tokens good until
they expire (15 minutes). The auth service records a per-user "not before"
time in one Redis sorted set; every service process reads the whole set once
a second (it holds only the last token lifetime's revocations, so it stays
small) and refuses tokens issued before their user's time. Reading a set per
second instead of per RPC keeps the sale path free of it.

While Redis is away a process keeps the revocations it last read (and the
auth service refuses to change a role or log out, so none is lost).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator

from redis.exceptions import RedisError

from runtime.errors import Unavailable
from runtime.redis_client import redis_client
from runtime.tasks import periodically

log = logging.getLogger(__name__)

KEY = "auth:sessions-not-before"  # member: user id; score: epoch seconds
# Older revocations concern only tokens that have expired anyway.
KEEP_SECONDS = 15 * 60 + 60
POLL_SECONDS = 1.0


class RevocationBook:
    """Where the auth service writes revocations."""

    def __init__(self, redis_url: str) -> None:
        self._redis = redis_client(redis_url)

    async def revoke(self, user_id: str) -> None:
        """Every access token of the user issued before now is refused from now on."""
        now = time.time()
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zadd(KEY, {user_id: now}, gt=True)
                pipe.zremrangebyscore(KEY, "-inf", now - KEEP_SECONDS)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise Unavailable(
                "SESSION_STORE_UNAVAILABLE",
                "sessions cannot be revoked right now; retry",
            ) from exc

    async def aclose(self) -> None:
        await self._redis.aclose()


class Revocations:
    """What a service process knows of revocations, refreshed every second."""

    def __init__(self, redis_url: str) -> None:
        self._redis = redis_client(redis_url)
        self._not_before: dict[str, float] = {}

    def not_before(self, user_id: str) -> float:
        return self._not_before.get(user_id, 0.0)

    async def refresh(self) -> None:
        try:
            found = await self._redis.zrangebyscore(
                KEY, time.time() - KEEP_SECONDS, "+inf", withscores=True
            )
        except (RedisError, OSError) as exc:
            log.warning("could not read revoked sessions; keeping the last known: %r", exc)
            return
        self._not_before = dict(found)

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[None]:
        """Keeps the revocations current for as long as the service runs."""
        await self.refresh()
        try:
            async with periodically(self.refresh, POLL_SECONDS, "revocations"):
                yield
        finally:
            await self._redis.aclose()
