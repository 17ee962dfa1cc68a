"""Rate limits per key and per tenant: requests per minute, tokens per minute, parallel requests.

Each limit is a moving one-minute window kept as a log of (time, cost) entries: `rpm` entries
cost 1, `tpm` entries cost the request's reserved tokens (prompt estimate plus max_tokens) and are
corrected to the tokens really used when the request ends; `parallel` entries are the requests in
flight (each held at most `hold` seconds, so a crashed gateway cannot leak slots). A request is
admitted only if every one of its limits has room, and then recorded in all of them at once; a
refusal carries the wait until enough of the window has expired (Retry-After).

Two interchangeable backends: `MemoryLimiter` for one gateway, `RedisLimiter` where several
gateways share the limits, one Lua script per check (atomic in Redis, which also supplies the
clock). The `limits` library was not used: it cannot correct a reservation after the fact, nor
admit a request against several limits all-or-nothing.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import redis.asyncio as aioredis

WINDOW_SECONDS = 60.0
Kind = Literal["rpm", "tpm", "parallel"]


@dataclass(frozen=True)
class Check:
    """One limit a request must fit: `key` names the window (scope, name and kind), `cost` what it takes."""

    kind: Kind
    key: str
    limit: int
    cost: int = 1


@dataclass(frozen=True)
class Denial:
    check: Check
    retry_after: float


class Limiter(Protocol):
    async def admit(self, request_id: str, checks: Sequence[Check]) -> Denial | None: ...
    async def settle(self, request_id: str, checks: Sequence[Check], used_tokens: int | None) -> None: ...


@dataclass
class _Entry:
    at: float
    request_id: str
    cost: int


class MemoryLimiter:
    """The limits of one gateway process, kept in memory (the event loop serialises every call)."""

    def __init__(self, hold: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._hold = hold
        self._clock = clock
        self._windows: dict[str, deque[_Entry]] = {}

    def _entries(self, check: Check, now: float) -> deque[_Entry]:
        entries = self._windows.setdefault(check.key, deque())
        horizon = now if check.kind == "parallel" else now - WINDOW_SECONDS
        while entries and entries[0].at <= horizon:
            entries.popleft()
        return entries

    def _wait(self, check: Check, entries: deque[_Entry], now: float) -> float | None:
        """None if `check` fits, else seconds until it would."""
        if check.kind == "parallel":
            return None if len(entries) + 1 <= check.limit else 1.0
        used = sum(e.cost for e in entries)
        need = used + check.cost - check.limit
        if need <= 0:
            return None
        if check.cost > check.limit:
            return WINDOW_SECONDS  # larger than the whole limit: it never fits
        freed = 0
        for entry in entries:
            freed += entry.cost
            if freed >= need:
                return entry.at + WINDOW_SECONDS - now
        return WINDOW_SECONDS

    async def admit(self, request_id: str, checks: Sequence[Check]) -> Denial | None:
        now = self._clock()
        denial: Denial | None = None
        for check in checks:
            wait = self._wait(check, self._entries(check, now), now)
            if wait is not None and (denial is None or wait > denial.retry_after):
                denial = Denial(check, wait)
        if denial is not None:
            return denial
        for check in checks:
            expires = now + self._hold if check.kind == "parallel" else now
            self._windows[check.key].append(_Entry(expires, request_id, check.cost))
        return None

    async def settle(self, request_id: str, checks: Sequence[Check], used_tokens: int | None) -> None:
        for check in checks:
            entries = self._windows.get(check.key, deque())
            for entry in list(entries):
                if entry.request_id != request_id:
                    continue
                if check.kind == "parallel":
                    entries.remove(entry)
                elif check.kind == "tpm" and used_tokens is not None:
                    entry.cost = used_tokens


# KEYS: one sorted set per check. ARGV: window, hold, request id, then kind, limit, cost per check.
# Members are "<request id>:<cost>"; scores are times (for parallel: when the slot expires).
ADMIT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window, hold, id = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local function cost_of(member) return tonumber(string.match(member, ':(%d+)$')) end
local denied, worst = 0, 0
for i = 1, #KEYS do
  local kind, limit, cost = ARGV[1 + i * 3], tonumber(ARGV[2 + i * 3]), tonumber(ARGV[3 + i * 3])
  if kind == 'parallel' then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
    if redis.call('ZCARD', KEYS[i]) + 1 > limit then denied = i; worst = math.max(worst, 1) end
  else
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
    local entries = redis.call('ZRANGE', KEYS[i], 0, -1, 'WITHSCORES')
    local used = 0
    for j = 1, #entries, 2 do used = used + cost_of(entries[j]) end
    local need = used + cost - limit
    if need > 0 then
      local wait = window
      if cost <= limit then
        local freed = 0
        for j = 1, #entries, 2 do
          freed = freed + cost_of(entries[j])
          if freed >= need then wait = tonumber(entries[j + 1]) + window - now; break end
        end
      end
      denied = i; worst = math.max(worst, wait)
    end
  end
end
if denied > 0 then return {denied, tostring(worst)} end
for i = 1, #KEYS do
  local kind, cost = ARGV[1 + i * 3], ARGV[3 + i * 3]
  if kind == 'parallel' then
    redis.call('ZADD', KEYS[i], now + hold, id .. ':' .. cost)
  else
    redis.call('ZADD', KEYS[i], now, id .. ':' .. cost)
  end
  redis.call('EXPIRE', KEYS[i], math.ceil(window + hold))
end
return {0, '0'}
"""

# KEYS: the checks' sorted sets. ARGV: request id, used tokens (-1: unknown), then kind, cost per check.
SETTLE_SCRIPT = """
local id, used = ARGV[1], tonumber(ARGV[2])
for i = 1, #KEYS do
  local kind, cost = ARGV[1 + i * 2], ARGV[2 + i * 2]
  local member = id .. ':' .. cost
  if kind == 'parallel' then
    redis.call('ZREM', KEYS[i], member)
  elseif kind == 'tpm' and used >= 0 then
    local at = redis.call('ZSCORE', KEYS[i], member)
    if at then
      redis.call('ZREM', KEYS[i], member)
      redis.call('ZADD', KEYS[i], at, id .. ':' .. used)
    end
  end
end
return 0
"""


class RedisLimiter:
    """Limits shared by every gateway on one Redis; each admission is one atomic script."""

    def __init__(self, client: aioredis.Redis, key_prefix: str, hold: float) -> None:
        self._prefix = key_prefix + "rl:"
        self._hold = hold
        self._admit = client.register_script(ADMIT_SCRIPT)
        self._settle = client.register_script(SETTLE_SCRIPT)

    async def admit(self, request_id: str, checks: Sequence[Check]) -> Denial | None:
        keys = [self._prefix + c.key for c in checks]
        args: list[str | float] = [WINDOW_SECONDS, self._hold, request_id]
        for check in checks:
            args += [check.kind, check.limit, check.cost]
        denied, wait = await self._admit(keys=keys, args=args)
        if int(denied) == 0:
            return None
        return Denial(checks[int(denied) - 1], max(0.0, float(wait)))

    async def settle(self, request_id: str, checks: Sequence[Check], used_tokens: int | None) -> None:
        keys = [self._prefix + c.key for c in checks]
        args: list[str | int] = [request_id, -1 if used_tokens is None else used_tokens]
        for check in checks:
            args += [check.kind, check.cost]
        await self._settle(keys=keys, args=args)
