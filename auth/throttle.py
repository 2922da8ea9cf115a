"""Failed logins slow down per account, whoever makes them and on any port.

Envoy limits logins per client address, which a botnet or a caller on the
auth service's own port walks around; guessing one account's password has to
be slow for the account itself. After LOGIN_FREE_ATTEMPTS failures in a row
each further attempt must wait, twice as long after every failure (1 s, 2 s,
4 s, ... up to LOGIN_DELAY_MAX_SECONDS); an attempt made sooner is refused
with RESOURCE_EXHAUSTED, reason TOO_MANY_ATTEMPTS and the seconds to wait,
before any password is checked. A success clears the count.

Kept in Redis so every replica counts the same failures, keyed by a hash of
the email as typed (normalized), so an unknown email slows down exactly like
a real account and the answer says nothing about which accounts exist.
If Redis is away, logins go on unthrottled (the edge limit still holds):
locking every user out would be the worse failure.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass

import redis.asyncio as redis
from redis.exceptions import RedisError

from runtime.errors import ResourceExhausted
from runtime.redis_client import redis_client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ThrottlePolicy:
    free_attempts: int = 5
    base_delay_seconds: float = 1.0
    max_delay_seconds: float = 900.0
    # Failures older than this (since the last one) are forgotten.
    window_seconds: int = 3600

    def delay_after(self, failures: int) -> float:
        """How long the next attempt must wait after this many failures in a row."""
        if failures < self.free_attempts:
            return 0.0
        exponent = min(failures - self.free_attempts, 32)  # 2**32 s is past any cap
        return min(self.base_delay_seconds * 2**exponent, self.max_delay_seconds)


def too_many_attempts(retry_after_seconds: int) -> ResourceExhausted:
    return ResourceExhausted(
        "TOO_MANY_ATTEMPTS",
        f"too many failed logins for this account; retry in {retry_after_seconds} s",
        {"retry_after_seconds": str(retry_after_seconds)},
    )


class LoginThrottle:
    def __init__(self, client: redis.Redis, policy: ThrottlePolicy) -> None:
        self._redis = client
        self._policy = policy

    @classmethod
    def connect(cls, url: str, policy: ThrottlePolicy) -> LoginThrottle:
        return cls(redis_client(url), policy)

    async def aclose(self) -> None:
        await self._redis.aclose()

    @staticmethod
    def _key(email: str) -> str:
        return "auth:login-failures:" + hashlib.sha256(email.encode()).hexdigest()[:32]

    async def check(self, email: str) -> None:
        """Raises TOO_MANY_ATTEMPTS while the account must wait."""
        try:
            until = await self._redis.hget(self._key(email), "until")
        except RedisError as exc:
            log.warning("login throttle unavailable, not applied: %s", exc)
            return
        wait = float(until or 0) - time.time()
        if wait > 0:
            raise too_many_attempts(math.ceil(wait))

    async def failed(self, email: str) -> None:
        key = self._key(email)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hincrby(key, "failures", 1)
                pipe.expire(key, self._policy.window_seconds)
                failures, _ = await pipe.execute()
            delay = self._policy.delay_after(failures)
            if delay:
                await self._redis.hset(key, "until", time.time() + delay)
                log.info("login failure %d in a row; next attempt in %.0f s", failures, delay)
        except RedisError as exc:
            log.warning("login throttle unavailable, failure not counted: %s", exc)

    async def succeeded(self, email: str) -> None:
        try:
            await self._redis.delete(self._key(email))
        except RedisError as exc:
            log.warning("login throttle unavailable, count not cleared: %s", exc)
