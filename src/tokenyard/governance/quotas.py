"""Quotas that never overspend: reserve the most a call can cost at admission, settle when it ends.

A quota (per tenant or per key) limits calls, tokens and/or cost per UTC day or month. Admission
reserves one call, the prompt's upper bound plus every token the call may generate, and the most it
can cost, on every quota that applies, all or nothing in one atomic step (a conditional UPDATE in
one transaction here; one Lua script in `quota_redis.py`). A counter therefore holds settled usage
plus the reservations in flight, and no number of simultaneous requests can push it past its
limit. When the call ends its reservation is replaced by the real amounts; a call that failed
releases it entirely. A gateway that dies between the two leaves its reservations counted until
the period ends: quotas fail safe, never open.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from functools import cache
from typing import Any, Protocol

from sqlalchemy import Connection, Update, bindparam, select, update
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import OperationalError

from tokenyard.errors import QuotaExceededError
from tokenyard.governance.periods import Period, period_start, seconds_left
from tokenyard.store import QuotaCounter, QuotaRow, Store

logger = logging.getLogger(__name__)
MICROS = Decimal(10) ** 6


def to_micros(amount: Decimal) -> int:
    return int((amount * MICROS).to_integral_value())


def from_micros(micros: int) -> Decimal:
    return (Decimal(micros) / MICROS).quantize(Decimal("0.000001"))


@dataclass(frozen=True)
class Amounts:
    calls: int = 0
    tokens: int = 0
    cost_micros: int = 0

    def minus(self, other: Amounts) -> Amounts:
        return Amounts(self.calls - other.calls, self.tokens - other.tokens, self.cost_micros - other.cost_micros)

    def plus(self, other: Amounts) -> Amounts:
        return Amounts(self.calls + other.calls, self.tokens + other.tokens, self.cost_micros + other.cost_micros)


@dataclass(frozen=True)
class QuotaSpec:
    scope: str  # 'tenant' or 'key'
    subject: str
    period: Period
    max_calls: int | None = None
    max_tokens: int | None = None
    max_cost_micros: int | None = None

    def describe(self) -> str:
        parts = [
            f"{self.max_calls} calls" if self.max_calls is not None else "",
            f"{self.max_tokens} tokens" if self.max_tokens is not None else "",
            f"cost {from_micros(self.max_cost_micros)}" if self.max_cost_micros is not None else "",
        ]
        return f"{self.scope} {self.subject!r}: {', '.join(p for p in parts if p)} per {self.period}"


Target = tuple[QuotaSpec, str]  # a quota and the start of the period a call counts in


@dataclass
class Reservation:
    targets: list[Target]  # each quota and the period it was reserved in
    amounts: Amounts
    done: bool = field(default=False)


class Counters(Protocol):
    """Where the counters live: the SQL store, or Redis when several gateways share one."""

    def reserve_many(self, requests: Sequence[tuple[list[Target], Amounts]]) -> list[QuotaSpec | None]:
        """For each request in order: add its amounts to every one of its targets if none would pass
        its limit, otherwise add nothing and give the first quota that would be passed. All the
        requests go to the store together (one transaction, one script call)."""

    def adjust(self, deltas: Mapping[Target, Amounts]) -> None:
        """Add each delta (possibly negative) to its target, unconditionally, all in one step."""

    def used(self, spec: QuotaSpec, start: str) -> Amounts:
        """What the quota's counter holds for the period starting `start` (settled plus reserved)."""


class QuotaService:
    """Knows every quota (the whole table, re-read every `cache_seconds`) and reserves, settles and
    releases against the counters. Between re-reads, and while the store is unreachable, the last
    table read holds: a tenant without a quota is served through a database outage.

    Settlements can be deferred (`defer`, then `flush` from a background task): each only gives back
    the unused part of a reservation, so while one waits the counter errs high, never low, and the
    deltas of many calls on the same counter go to the store as one update."""

    def __init__(self, store: Store, counters: Counters, cache_seconds: float = 2.0) -> None:
        self.store = store
        self.counters = counters
        self._cache_seconds = cache_seconds
        self._quotas: dict[tuple[str, str], QuotaSpec] | None = None
        self._read_at = -float("inf")
        self._lock = threading.Lock()
        self._pending: dict[Target, Amounts] = {}  # deferred settlements, summed per counter
        self._pending_lock = threading.Lock()

    def refresh(self) -> None:
        """Read the quotas table now (raises if the store cannot be reached)."""
        quotas = read_all_quotas(self.store)
        with self._lock:
            self._quotas, self._read_at = quotas, time.monotonic()

    def specs_for(self, tenant: str, key_prefix: str | None) -> list[QuotaSpec]:
        if time.monotonic() - self._read_at >= self._cache_seconds:
            try:
                self.refresh()
            except Exception:
                if self._quotas is None:
                    raise
                self._read_at = time.monotonic()  # try again after another interval, not on every call
                logger.warning("quotas table unreachable; using the copy read before")
        quotas = self._quotas or {}
        found = [quotas.get(("tenant", tenant)), quotas.get(("key", key_prefix or ""))]
        return [spec for spec in found if spec is not None]

    def reserve(
        self, tenant: str, key_prefix: str | None, amounts: Amounts, now: datetime | None = None
    ) -> Reservation:
        """Reserve on every quota of the tenant and key, or raise QuotaExceededError (429, Retry-After)."""
        result = self.reserve_many([(tenant, key_prefix, amounts)], now)[0]
        if isinstance(result, QuotaExceededError):
            raise result
        return result

    def reserve_many(
        self, calls: Sequence[tuple[str, str | None, Amounts]], now: datetime | None = None
    ) -> list[Reservation | QuotaExceededError]:
        """Reserve for several calls (tenant, key prefix, amounts) in one step on the counters: the
        reservations the gateway's calls wait for at the same moment share one transaction (and, on
        SQLite, one fsync) instead of paying one each. Each call gets its reservation or its refusal,
        as `reserve` would give it alone; if the counters cannot be reached, this raises for all."""
        now = now or datetime.now(timezone.utc)
        results: list[Reservation | QuotaExceededError] = []
        limited: list[tuple[int, list[Target], Amounts]] = []
        for tenant, key_prefix, amounts in calls:
            specs = self.specs_for(tenant, key_prefix)
            targets = sorted(
                ((s, period_start(s.period, now)) for s in specs), key=lambda t: (t[0].scope, t[0].subject)
            )
            if targets:
                limited.append((len(results), targets, amounts))
            results.append(Reservation(targets, amounts))
        if limited:
            refusals = self.counters.reserve_many([(targets, amounts) for _, targets, amounts in limited])
            for (index, _, _), refused in zip(limited, refusals, strict=True):
                if refused is not None:
                    results[index] = QuotaExceededError(
                        f"Quota exceeded for {refused.describe()}; "
                        f"it renews at the start of the next {refused.period} (UTC).",
                        retry_after=seconds_left(refused.period, now),
                    )
        return results

    def tenant_usage(self, now: datetime | None = None) -> list[tuple[str, str, float]]:
        """(tenant, 'calls'|'tokens'|'cost', share used this period) for every limit of every tenant
        quota: what the near-quota gauge shows. Key quotas are left out to keep the labels bounded."""
        now = now or datetime.now(timezone.utc)
        self.specs_for("", None)  # re-reads the table when the cached copy is old
        shares: list[tuple[str, str, float]] = []
        for spec in (self._quotas or {}).values():
            if spec.scope != "tenant":
                continue
            used = self.counters.used(spec, period_start(spec.period, now))
            limits = (("calls", spec.max_calls, used.calls), ("tokens", spec.max_tokens, used.tokens))
            for kind, limit, value in (*limits, ("cost", spec.max_cost_micros, used.cost_micros)):
                if limit is not None:
                    shares.append((spec.subject, kind, value / limit if limit > 0 else 1.0))
        return shares

    def settle(self, reservation: Reservation, actual: Amounts) -> None:
        """Replace the reservation by what the call really used (all zero releases it), now."""
        self.defer(reservation, actual)
        self.flush()

    def defer(self, reservation: Reservation, actual: Amounts) -> None:
        """Queue the settlement for the next `flush` (no I/O; settling twice changes nothing)."""
        if reservation.done:
            return
        reservation.done = True
        delta = actual.minus(reservation.amounts)
        if delta == Amounts():
            return
        with self._pending_lock:
            for target in reservation.targets:
                self._pending[target] = self._pending.get(target, Amounts()).plus(delta)

    def pending(self) -> int:
        """Counters with a deferred settlement waiting."""
        return len(self._pending)

    def flush(self) -> None:
        """Apply every deferred settlement in one step; on failure they stay queued and this raises."""
        with self._pending_lock:
            deltas, self._pending = self._pending, {}
        deltas = {target: delta for target, delta in deltas.items() if delta != Amounts()}
        if not deltas:
            return
        try:
            self.counters.adjust(deltas)
        except Exception:
            with self._pending_lock:
                for target, delta in deltas.items():
                    self._pending[target] = self._pending.get(target, Amounts()).plus(delta)
            raise


def read_all_quotas(store: Store) -> dict[tuple[str, str], QuotaSpec]:
    """Every quota with at least one limit, by (scope, subject)."""
    with store.session() as session:
        rows = session.scalars(select(QuotaRow)).all()
        return {
            (r.scope, r.subject): QuotaSpec(r.scope, r.subject, r.period, r.max_calls, r.max_tokens, r.max_cost_micros)  # type: ignore[arg-type]
            for r in rows
            if r.max_calls is not None or r.max_tokens is not None or r.max_cost_micros is not None
        }


class SqlCounters:
    """Counters in the quota_counters table: one conditional UPDATE per quota, in one transaction."""

    RETRIES = 5  # deadlocks and lock timeouts between gateways are retried, then reported

    def __init__(self, store: Store) -> None:
        self.store = store
        self._known: set[tuple[str, str, str]] = set()

    def _ensure_rows(self, targets: list[Target]) -> None:
        """Create missing counter rows in their own transaction (never inside the reserving one:
        on InnoDB an INSERT IGNORE's shared lock followed by the UPDATE's exclusive lock deadlocks)."""
        missing = [(s.scope, s.subject, p) for s, p in targets if (s.scope, s.subject, p) not in self._known]
        if not missing:
            return
        with self.store.write() as connection:  # Core: no ORM unit of work on the hot path
            for scope, subject, start in missing:
                connection.execute(_insert_ignore(connection.dialect.name, scope, subject, start))
        self._known.update(missing)

    def reserve_many(self, requests: Sequence[tuple[list[Target], Amounts]]) -> list[QuotaSpec | None]:
        rows = sorted(
            {
                (spec.scope, spec.subject, start): (spec, start) for targets, _ in requests for spec, start in targets
            }.items()
        )
        self._ensure_rows([target for _, target in rows])
        # One request on one quota (the usual case alone) is one conditional UPDATE, atomic by itself:
        # on PostgreSQL it runs without BEGIN and COMMIT, two round trips fewer. Not on MySQL, whose
        # driver spends a query turning autocommit on and another turning it off, nor on SQLite, where
        # BEGIN costs nothing and leaving autocommit costs a PRAGMA.
        alone = len(requests) == 1 and len(rows) == 1 and self.store.kind == "postgresql"
        for attempt in range(self.RETRIES):
            try:
                with self.store.write(autocommit=alone) as connection:  # Core: no ORM unit of work
                    if len(rows) > 1 and self.store.kind != "sqlite":
                        _lock_in_order(connection, [target for _, target in rows])
                    return [_reserve_one(connection, targets, amounts) for targets, amounts in requests]
            except OperationalError as exc:
                if attempt == self.RETRIES - 1:
                    raise
                logger.info("quota reservation retried after %s", type(exc.orig).__name__)
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def adjust(self, deltas: Mapping[Target, Amounts]) -> None:
        if not deltas:
            return
        # A fixed order (the one reservations take too): two gateways never wait on each other in a cycle.
        ordered = sorted(deltas.items(), key=lambda item: (item[0][0].scope, item[0][0].subject, item[0][1]))
        for attempt in range(self.RETRIES):
            try:
                with self.store.write() as connection:  # Core: no ORM unit of work on the hot path
                    for (spec, start), delta in ordered:
                        connection.execute(_conditional_add(False, False, False), _parameters(spec, start, delta))
                return
            except OperationalError:
                if attempt == self.RETRIES - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))

    def used(self, spec: QuotaSpec, start: str) -> Amounts:
        with self.store.engine.connect() as connection:
            row = connection.execute(
                select(QuotaCounter.calls, QuotaCounter.tokens, QuotaCounter.cost_micros).where(
                    QuotaCounter.scope == spec.scope,
                    QuotaCounter.subject == spec.subject,
                    QuotaCounter.period_start == start,
                )
            ).first()
        return Amounts() if row is None else Amounts(int(row[0]), int(row[1]), int(row[2]))


def _reserve_one(connection: Connection, targets: list[Target], amounts: Amounts) -> QuotaSpec | None:
    """Add `amounts` to every target, or to none and name the quota that refused: the targets added
    to before a refusal get their amounts back in the same transaction, so no one ever sees them."""
    added: list[Target] = []
    for spec, start in targets:
        if connection.execute(_conditional_add(*_limited(spec)), _parameters(spec, start, amounts)).rowcount != 1:
            for done, done_start in added:
                connection.execute(
                    _conditional_add(False, False, False), _parameters(done, done_start, Amounts().minus(amounts))
                )
            return spec
        added.append((spec, start))
    return None


def _lock_in_order(connection: Connection, targets: list[Target]) -> None:
    """Lock every counter row of a batch in one global order (the order settlements use too) before
    touching any: two gateways whose batches share rows then never wait on each other in a cycle."""
    counter = QuotaCounter
    for spec, start in targets:
        connection.execute(
            select(counter.id)
            .where(counter.scope == spec.scope, counter.subject == spec.subject, counter.period_start == start)
            .with_for_update()
        )


@cache
def _conditional_add(calls_limited: bool, tokens_limited: bool, cost_limited: bool) -> Update:
    """UPDATE ... SET used = used + amount WHERE used + amount <= limit, for each limit set.

    Built once per combination of limits with bound parameters, so a call pays for executing the
    statement, not for building and compiling it (SQLAlchemy caches the compiled form by statement)."""
    counter = QuotaCounter
    statement = update(counter).where(
        counter.scope == bindparam("q_scope"),
        counter.subject == bindparam("q_subject"),
        counter.period_start == bindparam("q_start"),
    )
    if calls_limited:
        statement = statement.where(counter.calls + bindparam("q_calls") <= bindparam("q_max_calls"))
    if tokens_limited:
        statement = statement.where(counter.tokens + bindparam("q_tokens") <= bindparam("q_max_tokens"))
    if cost_limited:
        statement = statement.where(counter.cost_micros + bindparam("q_cost") <= bindparam("q_max_cost"))
    return statement.values(
        calls=counter.calls + bindparam("q_calls"),
        tokens=counter.tokens + bindparam("q_tokens"),
        cost_micros=counter.cost_micros + bindparam("q_cost"),
    )


def _limited(spec: QuotaSpec) -> tuple[bool, bool, bool]:
    return spec.max_calls is not None, spec.max_tokens is not None, spec.max_cost_micros is not None


def _parameters(spec: QuotaSpec, start: str, amounts: Amounts) -> dict[str, Any]:
    return {
        "q_scope": spec.scope,
        "q_subject": spec.subject,
        "q_start": start,
        "q_calls": amounts.calls,
        "q_tokens": amounts.tokens,
        "q_cost": amounts.cost_micros,
        "q_max_calls": spec.max_calls,
        "q_max_tokens": spec.max_tokens,
        "q_max_cost": spec.max_cost_micros,
    }


def _insert_ignore(dialect: str, scope: str, subject: str, start: str):  # type: ignore[no-untyped-def]
    values = {"scope": scope, "subject": subject, "period_start": start, "calls": 0, "tokens": 0, "cost_micros": 0}
    if dialect == "mysql":
        return mysql.insert(QuotaCounter).values(**values).prefix_with("IGNORE")
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(QuotaCounter).values(**values).on_conflict_do_nothing()
