"""Seat holds in Redis: all-or-nothing, owner-checked, expiring.

Per seat a key `ev:{event}:hold:<seat>` holds the owner token (SET NX PX),
and per tier a sorted set `ev:{event}:held:<tier>` scores each held seat by
its expiry, so "how many VIP seats are held" is one ZCOUNT. A sold seat's
key keeps a permanent `sold:<booking>` marker, so a hold on it fails without
asking PostgreSQL, which stays the authority on what is sold.

Holds trust those markers only while `ev:{event}:markers` says they are
complete, and hand out fencing tokens from the counter `ev:{event}:fence`
only while it exists. Redis losing its data (or evicting either key) makes
the lock script refuse to answer until the event service has rebuilt the
event's state from PostgreSQL (`MarkersMissing`): the sold markers, and the
counter raised to the floor of a new fence epoch counted in PostgreSQL, so a
token is always larger than every token handed out before, forgotten or not.
A marker that outlived its sale (a return racing a rebuild) is the other way
to be wrong, and the safe one: the hold is refused, and the service asks
PostgreSQL before it says so. The braces are a hash tag: one event's keys
share a Redis Cluster slot, as the scripts need.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as redis
from prometheus_client import Gauge
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from event.domain import SeatRef, Tier
from runtime.errors import Unavailable
from runtime.redis_client import redis_client
from runtime.tasks import periodically

# KEYS: fence, markers-complete flag, hold keys (n), held sets (n).
# ARGV: owner, ttl_ms, seat ids (n).
# Returns {-1} while the event's state needs a rebuild; {0, taken seat ids, their
# holders} when some seat is someone else's; else {1, fencing token, expiry}.
# A seat the owner holds already keeps its expiry: locking again must not
# extend a hold, or one caller could keep seats off sale forever. The hold's
# expiry is then its earliest seat's.
_LOCK = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) < 2 then return {-1} end
local n = (#KEYS - 2) / 2
local owner, ttl = ARGV[1], tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local taken, holders, fresh, expiries = {}, {}, {}, {}
local expiry = now + ttl
for i = 1, n do
  local key = KEYS[2 + i]
  expiries[i] = now + ttl
  if redis.call('SET', key, owner, 'NX', 'PX', ttl) then
    fresh[#fresh + 1] = key
  else
    local holder = redis.call('GET', key)
    if holder == owner then
      local left = redis.call('PTTL', key)
      if left < 0 then
        redis.call('PEXPIRE', key, ttl)  -- never left without an expiry
      else
        expiries[i] = now + left
        expiry = math.min(expiry, expiries[i])
      end
    else
      taken[#taken + 1] = ARGV[2 + i]
      holders[#holders + 1] = holder
    end
  end
end
if #taken > 0 then
  for _, key in ipairs(fresh) do redis.call('DEL', key) end
  return {0, taken, holders}
end
for i = 1, n do
  local held = KEYS[2 + n + i]
  redis.call('ZREMRANGEBYSCORE', held, '-inf', now)
  redis.call('ZADD', held, expiries[i], ARGV[2 + i])
end
return {1, redis.call('INCR', KEYS[1]), expiry}
"""

# KEYS: hold keys (n), held sets (n). ARGV: owner, seat ids (n).
_RELEASE = """
local n = #KEYS / 2
local released = {}
for i = 1, n do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
    redis.call('ZREM', KEYS[n + i], ARGV[1 + i])
    released[#released + 1] = ARGV[1 + i]
  end
end
return released
"""

# Before a sale: every hold must still be the owner's (or already be this
# booking's sale); each is stretched to at least min_ttl so it cannot lapse
# while PostgreSQL commits. KEYS: hold keys (n), held sets (n).
# ARGV: owner, sold marker, min_ttl_ms, seat ids (n). Returns the seats lost.
_VERIFY = """
local n = #KEYS / 2
local owner, marker, min_ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local lost = {}
for i = 1, n do
  local holder = redis.call('GET', KEYS[i])
  if holder ~= owner and holder ~= marker then lost[#lost + 1] = ARGV[3 + i] end
end
if #lost > 0 then return lost end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
for i = 1, n do
  if redis.call('GET', KEYS[i]) == owner and redis.call('PTTL', KEYS[i]) < min_ttl then
    redis.call('PEXPIRE', KEYS[i], min_ttl)
    redis.call('ZADD', KEYS[n + i], now + min_ttl, ARGV[3 + i])
  end
end
return lost
"""

# After a sale commits. KEYS: hold keys (n), held sets (n). ARGV: marker, seat ids (n).
_MARK_SOLD = """
local n = #KEYS / 2
for i = 1, n do
  redis.call('SET', KEYS[i], ARGV[1])
  redis.call('ZREM', KEYS[n + i], ARGV[1 + i])
end
return n
"""

# After a sale is undone, or to drop markers PostgreSQL disowns: deletes each
# key still holding its marker. KEYS: hold keys (n). ARGV: markers (n).
_UNMARK_SOLD = """
local cleared = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i] then
    redis.call('DEL', KEYS[i])
    cleared = cleared + 1
  end
end
return cleared
"""

# Rebuilding markers from PostgreSQL. KEYS: hold keys (n). ARGV: markers (n).
_RESTORE_SOLD = """
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[i]) end
return #KEYS
"""

# The end of a rebuild: the counter raised to at least the epoch's floor (never
# lowered: another replica's rebuild may have gone further), then the markers
# declared complete, at once. KEYS: fence, markers-complete flag. ARGV: floor.
_SEAL = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
redis.call('SET', KEYS[2], '1')
return redis.call('GET', KEYS[1])
"""

RESTORE_CHUNK = 2_000

T = TypeVar("T")


def hold_store_unavailable() -> Unavailable:
    return Unavailable("HOLD_STORE_UNAVAILABLE", "seat holds are unavailable; retry")


SOLD = "sold:"  # a sold seat's hold key holds SOLD + the booking id


def sold_marker(booking_id: str) -> str:
    return SOLD + booking_id


class MarkersMissing(Exception):
    """Redis lost the event's sold markers or fence counter; rebuild them before
    holding seats."""


@dataclass(frozen=True)
class Hold:
    fencing_token: int
    expire_ms: int


@dataclass(frozen=True)
class Refusal:
    """Seats someone else holds or bought; nothing was held."""

    taken: list[str]
    sold_markers: dict[str, str]  # of those, the ones marked sold: seat id -> marker


class HoldStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._lock = client.register_script(_LOCK)
        self._release = client.register_script(_RELEASE)
        self._verify = client.register_script(_VERIFY)
        self._mark_sold = client.register_script(_MARK_SOLD)
        self._unmark_sold = client.register_script(_UNMARK_SOLD)
        self._restore_sold = client.register_script(_RESTORE_SOLD)
        self._seal = client.register_script(_SEAL)

    @classmethod
    def connect(cls, url: str) -> HoldStore:
        return cls(redis_client(url))

    async def aclose(self) -> None:
        await self._redis.aclose()

    @staticmethod
    def _hold_key(event_id: str, seat: SeatRef) -> str:
        return f"ev:{{{event_id}}}:hold:{seat.seat_id}"

    @staticmethod
    def _held_key(event_id: str, tier: Tier) -> str:
        return f"ev:{{{event_id}}}:held:{tier.slug}"

    def _keys(self, event_id: str, seats: Sequence[SeatRef]) -> list[str]:
        return [self._hold_key(event_id, s) for s in seats] + [
            self._held_key(event_id, s.tier) for s in seats
        ]

    @staticmethod
    def _markers_key(event_id: str) -> str:
        return f"ev:{{{event_id}}}:markers"

    @staticmethod
    def _fence_key(event_id: str) -> str:
        return f"ev:{{{event_id}}}:fence"

    async def lock(
        self, event_id: str, seats: Sequence[SeatRef], owner: str, ttl_ms: int
    ) -> Hold | Refusal:
        """The hold, or what stood in its way (nothing is held then)."""
        keys = [
            self._fence_key(event_id),
            self._markers_key(event_id),
            *self._keys(event_id, seats),
        ]
        reply = await self._call(self._lock, keys, [owner, ttl_ms, *(s.seat_id for s in seats)])
        if reply[0] == -1:
            raise MarkersMissing(event_id)
        if reply[0] == 0:
            taken, holders = list(reply[1]), list(reply[2])
            return Refusal(
                taken,
                {
                    seat: holder
                    for seat, holder in zip(taken, holders, strict=True)
                    if holder.startswith(SOLD)
                },
            )
        return Hold(int(reply[1]), int(reply[2]))

    async def restore(
        self, event_id: str, sold: Sequence[tuple[SeatRef, str]], fence_floor: int
    ) -> None:
        """Marks every (seat, booking id) sold, then raises the fence counter to
        `fence_floor` and declares the markers complete."""
        for start in range(0, len(sold), RESTORE_CHUNK):
            chunk = sold[start : start + RESTORE_CHUNK]
            await self._call(
                self._restore_sold,
                [self._hold_key(event_id, seat) for seat, _ in chunk],
                [sold_marker(booking) for _, booking in chunk],
            )
        await self._call(
            self._seal, [self._fence_key(event_id), self._markers_key(event_id)], [fence_floor]
        )

    async def drop_markers(self, event_id: str, markers: dict[SeatRef, str]) -> None:
        """Deletes these markers where they still stand (PostgreSQL says unsold)."""
        await self._call(
            self._unmark_sold,
            [self._hold_key(event_id, seat) for seat in markers],
            list(markers.values()),
        )

    async def release(self, event_id: str, seats: Sequence[SeatRef], owner: str) -> list[str]:
        return list(
            await self._call(
                self._release, self._keys(event_id, seats), [owner, *(s.seat_id for s in seats)]
            )
        )

    async def verify(
        self, event_id: str, seats: Sequence[SeatRef], owner: str, booking_id: str, min_ttl_ms: int
    ) -> list[str]:
        """Seats whose hold is no longer the owner's; the others are extended."""
        args = [owner, sold_marker(booking_id), min_ttl_ms, *(s.seat_id for s in seats)]
        return list(await self._call(self._verify, self._keys(event_id, seats), args))

    async def mark_sold(self, event_id: str, seats: Sequence[SeatRef], booking_id: str) -> None:
        args = [sold_marker(booking_id), *(s.seat_id for s in seats)]
        await self._call(self._mark_sold, self._keys(event_id, seats), args)

    async def unmark_sold(self, event_id: str, seats: Sequence[SeatRef], booking_id: str) -> None:
        await self.drop_markers(event_id, dict.fromkeys(seats, sold_marker(booking_id)))

    async def held_counts(self, event_ids: Sequence[str]) -> dict[tuple[str, Tier], int]:
        """Live holds per (event, tier)."""
        now = f"({int(time.time() * 1000)}"
        pairs = [(e, t) for e in event_ids for t in Tier]

        async def count() -> list[int]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for event_id, tier in pairs:
                    pipe.zcount(self._held_key(event_id, tier), now, "+inf")
                return await pipe.execute()

        return dict(zip(pairs, await self._guard(count), strict=True))

    async def held_among(self, event_id: str, seats: Sequence[SeatRef]) -> set[SeatRef]:
        """Which of these seats are held right now."""
        now = time.time() * 1000
        by_tier: dict[Tier, list[SeatRef]] = {}
        for seat in seats:
            by_tier.setdefault(seat.tier, []).append(seat)

        async def scores() -> list[list[float | None]]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for tier, group in by_tier.items():
                    pipe.zmscore(self._held_key(event_id, tier), [s.seat_id for s in group])
                return await pipe.execute()

        held = set()
        for group, expiries in zip(by_tier.values(), await self._guard(scores), strict=True):
            held |= {s for s, e in zip(group, expiries, strict=True) if e is not None and e > now}
        return held

    async def held_seat_ids(self, event_id: str, tier: Tier) -> list[str]:
        now = f"({int(time.time() * 1000)}"

        async def members() -> list[str]:
            return await self._redis.zrangebyscore(self._held_key(event_id, tier), now, "+inf")

        return await self._guard(members)

    async def live_holds(self) -> int:
        """Live holds over every event (for the gauge; scans, so not on a hot path)."""
        now = f"({int(time.time() * 1000)}"

        async def count() -> int:
            keys = [key async for key in self._redis.scan_iter("ev:*:held:*", count=1000)]
            if not keys:
                return 0
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.zcount(key, now, "+inf")
                return sum(await pipe.execute())

        return await self._guard(count)

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        return await self._guard(lambda: script(keys=keys, args=args))

    async def _guard(self, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await operation()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise hold_store_unavailable() from exc


HOLDS_ACTIVE = Gauge("seat_holds_active", "Seats held right now, over every event.")


def reporting_holds(holds: HoldStore) -> contextlib.AbstractAsyncContextManager[None]:
    """Keeps the seat_holds_active gauge current for as long as the service runs."""

    async def report() -> None:
        HOLDS_ACTIVE.set(await holds.live_holds())

    return periodically(report, 10.0, "holds gauge")
