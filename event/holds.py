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
from collections.abc import Awaitable, Callable, Iterable, Sequence
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

# Per user, when the buyer is known, a sorted set `ev:{event}:user:<user>` scores
# each seat the user holds by its expiry and each seat they bought by +inf, so
# the event's max_tickets_per_user is checked in the same script that takes the
# seats: sixteen attempts at once by one user cannot pass it together. The
# hash `ev:{event}:owners` says whose an owner token's holds are (for the sale
# and the release), `ev:{event}:buyers` whose a booking's seats are (for a
# return). Those user keys are named inside the scripts from the event's key
# prefix (ARGV), all under the event's hash tag.

# Best-available, chosen and taken in one script, so callers asking at once get
# different seats instead of racing for the same ones. The candidates are seats
# PostgreSQL says are unsold, in seat-map order; the script skips those held (or
# marked sold) and takes the first `quantity` side by side in one row, or, in
# mode 'any', the first `quantity` free ones.
#
# Per tier a cursor `ev:{event}:held:<tier>:cursor` names the seat before which
# none is free, so a sale whose front rows are held does not read them again
# for every caller: the script moves it past the candidates it finds taken
# (those just taken included), when the candidates begin where it stood (a
# compare-and-set on its value, '' for none), and gives it the earliest expiry
# of the holds it passed, so it lapses before any of them does. Every script
# that frees a seat (release, drop, unmark) deletes its tier's cursor.
# KEYS: fence, markers-complete flag, owners, cursor, hold keys (m), held sets
# (m). ARGV: owner, ttl_ms, user, limit, key prefix, quantity, mode ('adjacent'
# or 'any'), the cursor the candidates follow, candidate seat ids (m).
# Returns {-1} (rebuild first), {-2, seats counted} (over the user's limit),
# {0, leading candidates taken} (no such seats among the candidates), or
# {1, fencing token, expiry, seat ids}.
_LOCK_BEST = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) < 2 then return {-1} end
local m = (#KEYS - 4) / 2
local owner, ttl, user, limit = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local quantity, mode, after = tonumber(ARGV[6]), ARGV[7], ARGV[8]
local chosen, run, last_row, last_number = nil, {}, nil, nil
local free = {}
for i = 1, m do
  if not redis.call('GET', KEYS[4 + i]) then
    local id = ARGV[8 + i]
    local row, number = string.match(id, '-(%d+)-(%d+)$')
    row, number = tonumber(row), tonumber(number)
    if row ~= last_row or number ~= last_number + 1 then run = {} end
    run[#run + 1] = i
    last_row, last_number = row, number
    if #free < quantity then free[#free + 1] = i end
    if #run == quantity then chosen = run break end
  end
end
if not chosen and mode == 'any' and #free == quantity then chosen = free end
local reply = nil
if chosen then
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  local userkey = ARGV[5] .. 'user:' .. user
  if user ~= '' then
    redis.call('ZREMRANGEBYSCORE', userkey, '-inf', now)
    if limit > 0 then
      local counted = redis.call('ZCARD', userkey)
      if counted + quantity > limit then return {-2, counted} end
    end
  end
  local expiry = now + ttl
  reply = {1, 0, expiry}
  for _, i in ipairs(chosen) do
    local id = ARGV[8 + i]
    redis.call('SET', KEYS[4 + i], owner, 'PX', ttl)
    redis.call('ZREMRANGEBYSCORE', KEYS[4 + m + i], '-inf', now)
    redis.call('ZADD', KEYS[4 + m + i], expiry, id)
    if user ~= '' then redis.call('ZADD', userkey, expiry, id) end
    reply[#reply + 1] = id
  end
  if user ~= '' then redis.call('HSET', KEYS[3], owner, user) end
  reply[2] = redis.call('INCR', KEYS[1])
end
local passed, lapse = 0, ttl
for i = 1, m do
  local left = redis.call('PTTL', KEYS[4 + i])
  if left == -2 then break end  -- free: the cursor stops before it
  if left >= 0 then lapse = math.min(lapse, left) end  -- a sold marker never lapses
  passed = i
end
if passed > 0 and (redis.call('GET', KEYS[4]) or '') == after then
  local left = redis.call('PTTL', KEYS[4])
  if left >= 0 then lapse = math.min(lapse, left) end
  if lapse > 0 then redis.call('SET', KEYS[4], ARGV[8 + passed], 'PX', lapse) end
end
if chosen then return reply end
return {0, passed}
"""

# KEYS: fence, markers-complete flag, owners, hold keys (n), held sets (n).
# ARGV: owner, ttl_ms, user ('' if unknown), limit (0: none), key prefix, seat ids (n).
# Returns {-1} while the event's state needs a rebuild; {-2, seats counted} when
# the user's limit would be passed; {0, taken seat ids, their holders} when some
# seat is someone else's; else {1, fencing token, expiry}.
# A seat the owner holds already keeps its expiry: locking again must not
# extend a hold, or one caller could keep seats off sale forever. The hold's
# expiry is then its earliest seat's.
_LOCK = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) < 2 then return {-1} end
local n = (#KEYS - 3) / 2
local owner, ttl, user, limit = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local userkey = ARGV[5] .. 'user:' .. user
if user ~= '' then
  redis.call('ZREMRANGEBYSCORE', userkey, '-inf', now)
  if limit > 0 then
    local counted = redis.call('ZCARD', userkey)
    local extra = 0
    for i = 1, n do
      if not redis.call('ZSCORE', userkey, ARGV[5 + i]) then extra = extra + 1 end
    end
    if counted + extra > limit then return {-2, counted} end
  end
end
local taken, holders, fresh, expiries = {}, {}, {}, {}
local expiry = now + ttl
for i = 1, n do
  local key = KEYS[3 + i]
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
      taken[#taken + 1] = ARGV[5 + i]
      holders[#holders + 1] = holder
    end
  end
end
if #taken > 0 then
  for _, key in ipairs(fresh) do redis.call('DEL', key) end
  return {0, taken, holders}
end
for i = 1, n do
  local held = KEYS[3 + n + i]
  redis.call('ZREMRANGEBYSCORE', held, '-inf', now)
  redis.call('ZADD', held, expiries[i], ARGV[5 + i])
end
if user ~= '' then
  redis.call('HSET', KEYS[3], owner, user)
  for i = 1, n do redis.call('ZADD', userkey, expiries[i], ARGV[5 + i]) end
end
return {1, redis.call('INCR', KEYS[1]), expiry}
"""

# KEYS: owners, hold keys (n), held sets (n). ARGV: owner, key prefix, seat ids (n).
_RELEASE = """
local n = (#KEYS - 1) / 2
local released = {}
local user = redis.call('HGET', KEYS[1], ARGV[1])
for i = 1, n do
  if redis.call('GET', KEYS[1 + i]) == ARGV[1] then
    redis.call('DEL', KEYS[1 + i], KEYS[1 + n + i] .. ':cursor')
    redis.call('ZREM', KEYS[1 + n + i], ARGV[2 + i])
    if user then redis.call('ZREM', ARGV[2] .. 'user:' .. user, ARGV[2 + i]) end
    released[#released + 1] = ARGV[2 + i]
  end
end
if user then redis.call('HDEL', KEYS[1], ARGV[1]) end
return released
"""

# Before a sale: every hold must still be the owner's (or already be this
# booking's sale); each is stretched to at least min_ttl so it cannot lapse
# while PostgreSQL commits. KEYS: owners, hold keys (n), held sets (n).
# ARGV: owner, sold marker, min_ttl_ms, seat ids (n). Returns the owner's user
# ('' if unknown, for PostgreSQL to record as the buyer), then the seats lost.
_VERIFY = """
local n = (#KEYS - 1) / 2
local owner, marker, min_ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local reply = {redis.call('HGET', KEYS[1], owner) or ''}
for i = 1, n do
  local holder = redis.call('GET', KEYS[1 + i])
  if holder ~= owner and holder ~= marker then reply[#reply + 1] = ARGV[3 + i] end
end
if #reply > 1 then return reply end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
for i = 1, n do
  if redis.call('GET', KEYS[1 + i]) == owner and redis.call('PTTL', KEYS[1 + i]) < min_ttl then
    redis.call('PEXPIRE', KEYS[1 + i], min_ttl)
    redis.call('ZADD', KEYS[1 + n + i], now + min_ttl, ARGV[3 + i])
  end
end
return reply
"""

# After a sale commits: the seats marked sold, and counted as the buyer's for good.
# KEYS: owners, buyers, hold keys (n), held sets (n).
# ARGV: marker, owner, booking id, key prefix, seat ids (n).
_MARK_SOLD = """
local n = (#KEYS - 2) / 2
local user = redis.call('HGET', KEYS[1], ARGV[2])
for i = 1, n do
  redis.call('SET', KEYS[2 + i], ARGV[1])
  redis.call('ZREM', KEYS[2 + n + i], ARGV[4 + i])
  if user then redis.call('ZADD', ARGV[4] .. 'user:' .. user, '+inf', ARGV[4 + i]) end
end
if user then
  redis.call('HSET', KEYS[2], ARGV[3], user)
  redis.call('HDEL', KEYS[1], ARGV[2])
end
return n
"""

# After a booking's seats are returned: they no longer count as its buyer's.
# KEYS: buyers. ARGV: booking id, key prefix, seat ids.
_FORGET_BUYER = """
local user = redis.call('HGET', KEYS[1], ARGV[1])
if not user then return 0 end
for i = 3, #ARGV do redis.call('ZREM', ARGV[2] .. 'user:' .. user, ARGV[i]) end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""

# After a sale is undone, or to drop markers PostgreSQL disowns: deletes each
# key still holding its marker. KEYS: hold keys (n), their tiers' cursors (n).
# ARGV: markers (n).
_UNMARK_SOLD = """
local cleared, n = 0, #KEYS / 2
for i = 1, n do
  if redis.call('GET', KEYS[i]) == ARGV[i] then
    redis.call('DEL', KEYS[i], KEYS[n + i])
    cleared = cleared + 1
  end
end
return cleared
"""

# Rebuilding markers from PostgreSQL, thousands of seats a call: the seats come
# as one text of "seat_id booking_id buyer_id" triples (SalePath.sold_markers),
# so neither side makes an object per seat; a known buyer's seats count towards
# their ticket limit again, for good. The hold keys are named here from their
# prefix, the user keys from the event's, all under the event's hash tag. A
# rebuild's own key (set when it begins) is gone if Redis lost its data since:
# then the triples are not written. KEYS: the rebuild's key, buyers.
# ARGV: hold key prefix, sold marker prefix, event key prefix, triples.
# Returns the seats marked, or -1.
_RESTORE_SOLD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local n, batch = 0, {}
for seat, booking, buyer in string.gmatch(ARGV[4], '(%S+) (%S+) (%S+)') do
  batch[#batch + 1] = ARGV[1] .. seat
  batch[#batch + 1] = ARGV[2] .. booking
  n = n + 1
  if #batch == 1000 then  -- one MSET per 500 seats: far fewer calls, within Lua's stack
    redis.call('MSET', unpack(batch))
    batch = {}
  end
  if buyer ~= '-' then
    redis.call('ZADD', ARGV[3] .. 'user:' .. buyer, '+inf', seat)
    redis.call('HSET', KEYS[2], booking, buyer)
  end
end
if #batch > 0 then redis.call('MSET', unpack(batch)) end
return n
"""

# The end of a rebuild: the counter raised to at least the epoch's floor (never
# lowered: another replica's rebuild may have gone further), then the markers
# declared complete, at once; unless the rebuild's key is gone (Redis lost its
# data since the rebuild began, and with it markers already written): then 0
# and nothing is declared. KEYS: fence, markers-complete flag, the rebuild's key.
# ARGV: floor.
_SEAL = """
if redis.call('DEL', KEYS[3]) == 0 then return 0 end
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
redis.call('SET', KEYS[2], '1')
return 1
"""

# Holds as a resource (CreateHold): a hash `ev:{event}:holdrec:<hold_id>` per
# hold, with its user, owner token, seats, expiry, renewals left, fencing token
# and, once bought, its booking; kept HOLD_RECORD_RETENTION_MS past its expiry so
# a late look says "expired" rather than "not found". The checks below answer
# {0, reason} or {1, ...}; a hold another user asks about is HOLD_NOT_FOUND.
_RECORD_CHECKS = """
local function now_ms()
  local clock = redis.call('TIME')
  return tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
end
local function check(rec, user)
  if redis.call('EXISTS', rec) == 0 then return nil, 'HOLD_NOT_FOUND' end
  local f = redis.call('HMGET', rec, 'user', 'owner', 'expire_ms', 'booking', 'released',
                       'renewals_left', 'state')
  if f[1] ~= user or f[5] == '1' or f[7] ~= 'live' then return nil, 'HOLD_NOT_FOUND' end
  return f, nil
end
local function still_held(f, first, n, now)
  if tonumber(f[3]) <= now then return false end
  for i = first, first + n - 1 do
    if redis.call('GET', KEYS[i]) ~= f[2] then return false end
  end
  return true
end
"""

# KEYS: record, hold keys (n). ARGV: user, booking id.
_CLAIM = (
    _RECORD_CHECKS
    + """
local f, why = check(KEYS[1], ARGV[1])
if not f then return {0, why} end
if f[4] ~= '' and f[4] ~= ARGV[2] then return {0, 'HOLD_USED'} end
if not still_held(f, 2, #KEYS - 1, now_ms()) then return {0, 'HOLD_EXPIRED'} end
redis.call('HSET', KEYS[1], 'booking', ARGV[2])
return {1}
"""
)

# KEYS: record, hold keys (n), held sets (n).
# ARGV: user, ttl_ms, retention_ms, key prefix, seat ids (n).
_RENEW = (
    _RECORD_CHECKS
    + """
local n = (#KEYS - 1) / 2
local f, why = check(KEYS[1], ARGV[1])
if not f then return {0, why} end
if f[4] ~= '' then return {0, 'HOLD_USED'} end
if not still_held(f, 2, n, now_ms()) then return {0, 'HOLD_EXPIRED'} end
local left = tonumber(f[6])
if left <= 0 then return {0, 'HOLD_RENEWALS_EXHAUSTED'} end
local expiry = tonumber(f[3]) + tonumber(ARGV[2])
local userkey = ARGV[4] .. 'user:' .. ARGV[1]
for i = 1, n do
  redis.call('PEXPIREAT', KEYS[1 + i], expiry)
  redis.call('ZADD', KEYS[1 + n + i], expiry, ARGV[4 + i])
  redis.call('ZADD', userkey, expiry, ARGV[4 + i])
end
redis.call('HSET', KEYS[1], 'expire_ms', expiry, 'renewals_left', left - 1)
redis.call('PEXPIREAT', KEYS[1], expiry + tonumber(ARGV[3]))
return {1, expiry, left - 1}
"""
)

# KEYS: record, owners, hold keys (n), held sets (n). ARGV: user, key prefix, seat ids (n).
_DROP = (
    _RECORD_CHECKS
    + """
local n = (#KEYS - 2) / 2
local f, why = check(KEYS[1], ARGV[1])
if not f then return {0, why} end
if f[4] ~= '' then return {0, 'HOLD_USED'} end
local userkey = ARGV[2] .. 'user:' .. ARGV[1]
for i = 1, n do
  if redis.call('GET', KEYS[2 + i]) == f[2] then
    redis.call('DEL', KEYS[2 + i], KEYS[2 + n + i] .. ':cursor')
    redis.call('ZREM', KEYS[2 + n + i], ARGV[2 + i])
    redis.call('ZREM', userkey, ARGV[2 + i])
  end
end
redis.call('HDEL', KEYS[2], f[2])
redis.call('HSET', KEYS[1], 'released', '1')
return {1}
"""
)

# KEYS: record. ARGV: ttl_ms, then field, value pairs. 0 if the record exists.
_CREATE_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

HOLD_RECORD_RETENTION_MS = 24 * 3600 * 1000

# How long a rebuild's key outlives a rebuild that died half way.
REBUILD_KEY_TTL_MS = 10 * 60 * 1000

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
class OverLimit:
    """The user's seats (held and bought) would pass the event's limit; nothing was held."""

    counted: int


@dataclass(frozen=True)
class Refusal:
    """Seats someone else holds or bought; nothing was held."""

    taken: list[str]
    sold_markers: dict[str, str]  # of those, the ones marked sold: seat id -> marker


class HoldStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._lock = client.register_script(_LOCK)
        self._lock_best = client.register_script(_LOCK_BEST)
        self._release = client.register_script(_RELEASE)
        self._verify = client.register_script(_VERIFY)
        self._mark_sold = client.register_script(_MARK_SOLD)
        self._unmark_sold = client.register_script(_UNMARK_SOLD)
        self._restore_sold = client.register_script(_RESTORE_SOLD)
        self._seal = client.register_script(_SEAL)
        self._forget_buyer = client.register_script(_FORGET_BUYER)
        self._claim = client.register_script(_CLAIM)
        self._renew = client.register_script(_RENEW)
        self._drop = client.register_script(_DROP)

    @classmethod
    def connect(cls, url: str) -> HoldStore:
        return cls(redis_client(url))

    async def aclose(self) -> None:
        await self._redis.aclose()

    @staticmethod
    def _hold_prefix(event_id: str) -> str:
        return f"ev:{{{event_id}}}:hold:"

    def _hold_key(self, event_id: str, seat: SeatRef) -> str:
        return self._hold_prefix(event_id) + seat.seat_id

    @staticmethod
    def _held_key(event_id: str, tier: Tier) -> str:
        return f"ev:{{{event_id}}}:held:{tier.slug}"

    @classmethod
    def _cursor_key(cls, event_id: str, tier: Tier) -> str:
        # The scripts that free seats name it so from the held set's key.
        return cls._held_key(event_id, tier) + ":cursor"

    def _keys(self, event_id: str, seats: Sequence[SeatRef]) -> list[str]:
        return [self._hold_key(event_id, s) for s in seats] + [
            self._held_key(event_id, s.tier) for s in seats
        ]

    @staticmethod
    def _prefix(event_id: str) -> str:
        return f"ev:{{{event_id}}}:"

    def _owners_key(self, event_id: str) -> str:
        return self._prefix(event_id) + "owners"

    def _buyers_key(self, event_id: str) -> str:
        return self._prefix(event_id) + "buyers"

    def _record_key(self, event_id: str, hold_id: str) -> str:
        return self._prefix(event_id) + "holdrec:" + hold_id

    @staticmethod
    def _index_key(hold_id: str) -> str:
        return "hold:" + hold_id

    @staticmethod
    def _markers_key(event_id: str) -> str:
        return f"ev:{{{event_id}}}:markers"

    @staticmethod
    def _fence_key(event_id: str) -> str:
        return f"ev:{{{event_id}}}:fence"

    async def lock(
        self,
        event_id: str,
        seats: Sequence[SeatRef],
        owner: str,
        ttl_ms: int,
        user: str = "",
        limit: int = 0,
    ) -> Hold | Refusal | OverLimit:
        """The hold, or what stood in its way (nothing is held then). With the
        user known the seats count towards their `limit` (0: none)."""
        keys = [
            self._fence_key(event_id),
            self._markers_key(event_id),
            self._owners_key(event_id),
            *self._keys(event_id, seats),
        ]
        args = [owner, ttl_ms, user, limit, self._prefix(event_id), *(s.seat_id for s in seats)]
        reply = await self._call(self._lock, keys, args)
        if reply[0] == -1:
            raise MarkersMissing(event_id)
        if reply[0] == -2:
            return OverLimit(int(reply[1]))
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

    async def lock_best(
        self,
        event_id: str,
        tier: Tier,
        after: str,
        candidates: Sequence[SeatRef],
        quantity: int,
        adjacent_only: bool,
        owner: str,
        ttl_ms: int,
        user: str,
        limit: int,
    ) -> tuple[Hold, list[str]] | OverLimit | int:
        """Holds the first `quantity` free candidates side by side in one row (or,
        unless adjacent_only, the first free ones); if they have no such seats,
        how many leading candidates are taken. The candidates are the tier's
        seats that follow the seat `after` ('' from the front)."""
        keys = [
            self._fence_key(event_id),
            self._markers_key(event_id),
            self._owners_key(event_id),
            self._cursor_key(event_id, tier),
            *self._keys(event_id, candidates),
        ]
        args = [owner, ttl_ms, user, limit, self._prefix(event_id), quantity]
        args += ["adjacent" if adjacent_only else "any", after]
        args += [s.seat_id for s in candidates]
        reply = await self._call(self._lock_best, keys, args)
        if reply[0] == -1:
            raise MarkersMissing(event_id)
        if reply[0] == -2:
            return OverLimit(int(reply[1]))
        if reply[0] == 0:
            return int(reply[1])
        return Hold(int(reply[1]), int(reply[2])), [str(s) for s in reply[3:]]

    async def cursor(self, event_id: str, tier: Tier) -> str:
        """The tier's seat before which none is free ('' if unknown)."""
        key = self._cursor_key(event_id, tier)
        return await self._guard(lambda: self._redis.get(key)) or ""

    async def restore(self, event_id: str, sold: Iterable[str], fence_floor: int) -> int | None:
        """Marks sold every seat of `sold` (texts of "seat_id booking_id buyer_id"
        triples, as SalePath.sold_markers reads them), each counted as its
        buyer's, then raises the fence counter to `fence_floor` and declares the
        markers complete: the seats marked. None, with nothing declared, if
        Redis lost its data again meanwhile (the markers written before are
        gone): rebuild again."""
        rebuild = f"{self._prefix(event_id)}rebuild:{fence_floor}"
        await self._guard(lambda: self._redis.set(rebuild, "1", px=REBUILD_KEY_TTL_MS))
        marked = 0
        keys = [rebuild, self._buyers_key(event_id)]
        for triples in sold:
            args = [self._hold_prefix(event_id), SOLD, self._prefix(event_id), triples]
            written = await self._call(self._restore_sold, keys, args)
            if written < 0:
                return None
            marked += written
        keys = [self._fence_key(event_id), self._markers_key(event_id), rebuild]
        return marked if await self._call(self._seal, keys, [fence_floor]) else None

    async def drop_markers(self, event_id: str, markers: dict[SeatRef, str]) -> None:
        """Deletes these markers where they still stand (PostgreSQL says unsold)."""
        keys = [self._hold_key(event_id, seat) for seat in markers]
        keys += [self._cursor_key(event_id, seat.tier) for seat in markers]
        await self._call(self._unmark_sold, keys, list(markers.values()))

    async def release(self, event_id: str, seats: Sequence[SeatRef], owner: str) -> list[str]:
        keys = [self._owners_key(event_id), *self._keys(event_id, seats)]
        args = [owner, self._prefix(event_id), *(s.seat_id for s in seats)]
        return list(await self._call(self._release, keys, args))

    async def verify(
        self, event_id: str, seats: Sequence[SeatRef], owner: str, booking_id: str, min_ttl_ms: int
    ) -> tuple[str, list[str]]:
        """The owner's user ('' if unknown) and the seats whose hold is no longer
        the owner's; if there are none, every hold is extended."""
        keys = [self._owners_key(event_id), *self._keys(event_id, seats)]
        args = [owner, sold_marker(booking_id), min_ttl_ms, *(s.seat_id for s in seats)]
        user, *lost = await self._call(self._verify, keys, args)
        return str(user), [str(s) for s in lost]

    async def mark_sold(
        self, event_id: str, seats: Sequence[SeatRef], booking_id: str, owner: str = ""
    ) -> None:
        keys = [self._owners_key(event_id), self._buyers_key(event_id)]
        keys += self._keys(event_id, seats)
        args = [sold_marker(booking_id), owner, booking_id, self._prefix(event_id)]
        await self._call(self._mark_sold, keys, [*args, *(s.seat_id for s in seats)])

    async def unmark_sold(self, event_id: str, seats: Sequence[SeatRef], booking_id: str) -> None:
        await self.drop_markers(event_id, dict.fromkeys(seats, sold_marker(booking_id)))
        args = [booking_id, self._prefix(event_id), *(s.seat_id for s in seats)]
        await self._call(self._forget_buyer, [self._buyers_key(event_id)], args)

    # -- holds as a resource --------------------------------------------------

    async def create_record(
        self, event_id: str, hold_id: str, fields: dict[str, str | int], ttl_ms: int
    ) -> bool:
        """Writes a new hold's record; False if one exists (a retry of its request)."""
        pairs = [item for pair in fields.items() for item in pair]

        async def create() -> list[Any]:
            # One round trip. The index lives outside the event's hash tag, so it
            # cannot be in the script; NX keeps a retry from repointing it. EVAL,
            # not EVALSHA: a registered script in a pipeline costs a SCRIPT EXISTS
            # round trip of its own each time.
            async with self._redis.pipeline(transaction=False) as pipe:
                key = self._record_key(event_id, hold_id)
                pipe.eval(_CREATE_RECORD, 1, key, ttl_ms, *pairs)
                pipe.set(self._index_key(hold_id), event_id, px=ttl_ms, nx=True)
                return await pipe.execute()

        created, _ = await self._guard(create)
        return bool(created)

    async def update_record(
        self, event_id: str, hold_id: str, fields: dict[str, str | int], expire_at_ms: int
    ) -> None:
        key = self._record_key(event_id, hold_id)

        async def update() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=fields)
                pipe.pexpireat(key, expire_at_ms)
                pipe.pexpireat(self._index_key(hold_id), expire_at_ms)
                await pipe.execute()

        await self._guard(update)

    async def delete_record(self, event_id: str, hold_id: str) -> None:
        key = self._record_key(event_id, hold_id)
        await self._guard(lambda: self._redis.delete(key, self._index_key(hold_id)))

    async def record(self, hold_id: str) -> tuple[str, dict[str, str]] | None:
        """(event id, fields) of a hold, or None if there is none."""
        event_id = await self._guard(lambda: self._redis.get(self._index_key(hold_id)))
        if event_id is None:
            return None
        key = self._record_key(event_id, hold_id)
        fields = await self._guard(lambda: self._redis.hgetall(key))
        return (event_id, fields) if fields else None

    async def claim(
        self, event_id: str, hold_id: str, seats: Sequence[SeatRef], user: str, booking_id: str
    ) -> str:
        """'' once the hold is the booking's, else the reason it cannot be."""
        keys = [self._record_key(event_id, hold_id)]
        keys += [self._hold_key(event_id, s) for s in seats]
        reply = await self._call(self._claim, keys, [user, booking_id])
        return "" if reply[0] == 1 else str(reply[1])

    async def renew(
        self, event_id: str, hold_id: str, seats: Sequence[SeatRef], user: str, ttl_ms: int
    ) -> tuple[int, int] | str:
        """(new expiry, renewals left), or the reason it cannot be renewed."""
        keys = [self._record_key(event_id, hold_id), *self._keys(event_id, seats)]
        args = [user, ttl_ms, HOLD_RECORD_RETENTION_MS, self._prefix(event_id)]
        reply = await self._call(self._renew, keys, [*args, *(s.seat_id for s in seats)])
        if reply[0] == 0:
            return str(reply[1])
        await self._guard(
            lambda: self._redis.pexpireat(
                self._index_key(hold_id), int(reply[1]) + HOLD_RECORD_RETENTION_MS
            )
        )
        return int(reply[1]), int(reply[2])

    async def drop(self, event_id: str, hold_id: str, seats: Sequence[SeatRef], user: str) -> str:
        """'' once the hold's seats are free, else the reason they are not."""
        keys = [self._record_key(event_id, hold_id), self._owners_key(event_id)]
        keys += self._keys(event_id, seats)
        args = [user, self._prefix(event_id), *(s.seat_id for s in seats)]
        reply = await self._call(self._drop, keys, args)
        return "" if reply[0] == 1 else str(reply[1])

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
            # Sorted sets only: a tier's best-available cursor (`...:held:<tier>:cursor`,
            # a string) matches the pattern too, and ZCOUNT on it fails the count.
            held = self._redis.scan_iter("ev:*:held:*", count=1000, _type="zset")
            keys = [key async for key in held]
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
