"""One-time codes emailed to prove an address: verifying it, resetting a password.

A code is six random digits, good for CODE_TTL, for one use and for
CODE_ATTEMPTS tries (then it is dead, the right code included). The database
keeps only an HMAC of it under a key kept beside the signing keys, never in
the database: six digits hashed without a secret would fall to a million
guesses as soon as the table leaked. The HMAC binds the user and the purpose,
so a code proves nothing for another account or the other purpose, and it is
compared in constant time.

Sending a code is limited per address, whether or not the address has an
account (so the limit says nothing about which do): at most one a
CODE_RESEND_INTERVAL_SECONDS and CODE_SENDS_PER_HOUR an hour. With five tries
a code, that caps a guesser at a few dozen guesses an hour out of a million.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import redis.asyncio as redis
from redis.exceptions import RedisError

from runtime.errors import FailedPrecondition, ResourceExhausted, Unavailable
from runtime.redis_client import redis_client

log = logging.getLogger(__name__)

CODE_TTL = timedelta(minutes=15)
CODE_ATTEMPTS = 5
CODE_DIGITS = 6
KEY_FILE = "codes.key"

VERIFY_EMAIL = "verify_email"
RESET_PASSWORD = "reset_password"
PURPOSES = (VERIFY_EMAIL, RESET_PASSWORD)


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def invalid_code() -> FailedPrecondition:
    # One answer for every way a code can fail, an unknown address included:
    # telling "expired" from "wrong" would tell that a code, so an account, exists.
    return FailedPrecondition(
        "INVALID_CODE",
        "the code is wrong, expired, used or tried too often; ask for a new one",
    )


def ensure_code_key(keys_dir: Path) -> bytes:
    """The HMAC key of the directory, made on first use. Two processes making it
    at once agree: the second reads what the first wrote."""
    path = keys_dir / KEY_FILE
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # the writer may not have written yet
            key = path.read_bytes()
            if len(key) == 32:
                return key
            time.sleep(0.01)
        raise RuntimeError(f"{path} is not a 32-byte key; remove it to make a new one") from None
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    log.info("generated the code key %s", path.name)
    return key


class CodeHasher:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def digest(self, purpose: str, user_id: str, code: str) -> bytes:
        return hmac.new(self._key, f"{purpose}:{user_id}:{code}".encode(), hashlib.sha256).digest()

    def matches(self, stored: bytes | None, purpose: str, user_id: str, code: str) -> bool:
        """Constant time, and as long without a stored code as with one."""
        expected = self.digest(purpose, user_id, code)
        return hmac.compare_digest(stored or bytes(len(expected)), expected) and stored is not None


@dataclass(frozen=True)
class SendPolicy:
    interval_seconds: float = 60.0
    per_hour: int = 5


# Atomically: refused while the last send is too recent or the hour's sends are
# used up (with the milliseconds to wait), else counted.
_TAKE = """
local gap = redis.call('PTTL', KEYS[1])
if gap > 0 then return gap end
local sent = tonumber(redis.call('GET', KEYS[2]) or '0')
if sent >= tonumber(ARGV[2]) then
  local left = redis.call('PTTL', KEYS[2])
  if left > 0 then return left end
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
redis.call('INCR', KEYS[2])
if redis.call('PTTL', KEYS[2]) < 0 then redis.call('PEXPIRE', KEYS[2], 3600000) end
return 0
"""


def too_many_codes(retry_after_seconds: int) -> ResourceExhausted:
    return ResourceExhausted(
        "TOO_MANY_CODES",
        f"a code was sent to this address recently; retry in {retry_after_seconds} s",
        {"retry_after_seconds": str(retry_after_seconds)},
    )


class SendLimiter:
    def __init__(self, client: redis.Redis, policy: SendPolicy) -> None:
        self._redis = client
        self._policy = policy
        self._take = client.register_script(_TAKE)

    @classmethod
    def connect(cls, url: str, policy: SendPolicy) -> SendLimiter:
        return cls(redis_client(url), policy)

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def take(self, purpose: str, email: str) -> None:
        """Counts a send to `email`, or raises TOO_MANY_CODES with the wait."""
        key = f"auth:code-sends:{purpose}:" + hashlib.sha256(email.encode()).hexdigest()[:32]
        try:
            wait_ms = await self._take(
                keys=[f"{key}:gap", f"{key}:hour"],
                args=[max(1, int(self._policy.interval_seconds * 1000)), self._policy.per_hour],
            )
        except (RedisError, OSError) as exc:
            # Unlike failed logins, unlimited code sends would be the worse failure.
            raise Unavailable("CODE_SENDER_UNAVAILABLE", "codes cannot be sent now; retry") from exc
        if wait_ms:
            raise too_many_codes(max(1, math.ceil(int(wait_ms) / 1000)))
