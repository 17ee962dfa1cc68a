"""Quota counters in Redis, for several gateways: one Lua script checks and reserves atomically.

Each quota's period is one hash (`<prefix>quota:<scope>:<subject>:<period start>`) with the fields
calls, tokens and cost (micro-units). The script reads every hash the call touches, and only if
none would pass its limit adds the amounts to all of them: Redis runs a script alone, so two
gateways can never both take the last unit. Hashes expire a day after their period ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone

import redis

from tokenyard.governance.periods import period_end
from tokenyard.governance.quotas import Amounts, QuotaSpec, Target

NO_LIMIT = -1
RESERVE = """
local calls, tokens, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, #KEYS do
  local base = 3 + (i - 1) * 4
  local used = redis.call('HMGET', KEYS[i], 'calls', 'tokens', 'cost')
  local limits = {tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])}
  local wanted = {calls, tokens, cost}
  for f = 1, 3 do
    if limits[f] >= 0 and (tonumber(used[f]) or 0) + wanted[f] > limits[f] then return i end
  end
end
for i = 1, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'calls', calls)
  redis.call('HINCRBY', KEYS[i], 'tokens', tokens)
  redis.call('HINCRBY', KEYS[i], 'cost', cost)
  redis.call('EXPIREAT', KEYS[i], tonumber(ARGV[3 + (i - 1) * 4 + 4]))
end
return 0
"""
ADJUST = """
for i = 1, #KEYS do
  local base = (i - 1) * 3
  redis.call('HINCRBY', KEYS[i], 'calls', tonumber(ARGV[base + 1]))
  redis.call('HINCRBY', KEYS[i], 'tokens', tonumber(ARGV[base + 2]))
  redis.call('HINCRBY', KEYS[i], 'cost', tonumber(ARGV[base + 3]))
end
return 0
"""


def _limit(value: int | None) -> int:
    return NO_LIMIT if value is None else value


class RedisCounters:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._reserve = client.register_script(RESERVE)
        self._adjust = client.register_script(ADJUST)

    def key(self, spec: QuotaSpec, start: str) -> str:
        return f"{self._prefix}quota:{spec.scope}:{spec.subject}:{start}"

    def reserve_many(self, requests: Sequence[tuple[list[Target], Amounts]]) -> list[QuotaSpec | None]:
        """One script call a request (each atomic), all sent in one pipeline: one round trip."""
        now = datetime.now(timezone.utc)
        pipeline = self._client.pipeline(transaction=False)
        for targets, amounts in requests:
            args: list[int] = [amounts.calls, amounts.tokens, amounts.cost_micros]
            for spec, _ in targets:
                expires = period_end(spec.period, now) + timedelta(days=1)
                args += [_limit(spec.max_calls), _limit(spec.max_tokens), _limit(spec.max_cost_micros)]
                args.append(int(expires.timestamp()))
            self._reserve(keys=[self.key(s, p) for s, p in targets], args=args, client=pipeline)
        answers = pipeline.execute()
        return [
            None if int(refused) == 0 else targets[int(refused) - 1][0]
            for (targets, _), refused in zip(requests, answers, strict=True)
        ]

    def adjust(self, deltas: Mapping[Target, Amounts]) -> None:
        if not deltas:
            return
        args = [n for d in deltas.values() for n in (d.calls, d.tokens, d.cost_micros)]
        self._adjust(keys=[self.key(s, p) for s, p in deltas], args=args)  # one script: all or nothing

    def used(self, spec: QuotaSpec, start: str) -> Amounts:
        values = self._client.hmget(self.key(spec, start), ["calls", "tokens", "cost"])
        calls, tokens, cost = (int(v or 0) for v in values)
        return Amounts(calls, tokens, cost)
