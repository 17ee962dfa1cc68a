"""Usage reports from the daily rollups (never the raw records): per tenant and day, model or key.

What `tokenyard usage` and `GET /admin/usage` return. The CSV is the one a finance team imports:
one row per tenant and group, cost as an exact decimal string in the billing currency.
"""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import func, select

from tokenyard.governance.quotas import from_micros
from tokenyard.store import Store, UsageDaily
from tokenyard.textwidth import ljust

GroupBy = Literal["day", "model", "key"]
COLUMNS = {"day": UsageDaily.day, "model": UsageDaily.model, "key": UsageDaily.key_prefix}


class UsageLine(BaseModel):
    tenant: str
    group: str  # the day (YYYY-MM-DD), the model or the key prefix
    requests: int
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost: Decimal


class UsageQuery(BaseModel):
    tenant: str | None = None
    since: date | None = None
    until: date | None = None  # inclusive
    group_by: GroupBy = "day"


def usage_report(store: Store, query: UsageQuery) -> list[UsageLine]:
    group = COLUMNS[query.group_by]
    sums = [
        func.sum(UsageDaily.requests),
        func.sum(UsageDaily.calls),
        func.sum(UsageDaily.prompt_tokens),
        func.sum(UsageDaily.completion_tokens),
        func.sum(UsageDaily.cached_tokens),
        func.sum(UsageDaily.cost_micros),
    ]
    statement = select(UsageDaily.tenant, group, *sums).group_by(UsageDaily.tenant, group)
    if query.tenant is not None:
        statement = statement.where(UsageDaily.tenant == query.tenant)
    if query.since is not None:
        statement = statement.where(UsageDaily.day >= query.since)
    if query.until is not None:
        statement = statement.where(UsageDaily.day <= query.until)
    statement = statement.order_by(UsageDaily.tenant, group)
    with store.session() as session:
        rows = session.execute(statement).all()
    return [_line(tuple(row)) for row in rows]


def _int(value: Any) -> int:
    return int(value or 0)  # SUM() is a Decimal on PostgreSQL and MySQL, an int on SQLite


def _line(row: tuple[Any, ...]) -> UsageLine:
    tenant, value, requests, calls, prompt, completion, cached, cost = row
    return UsageLine(
        tenant=str(tenant),
        group=value.isoformat() if isinstance(value, date) else str(value),
        requests=_int(requests),
        calls=_int(calls),
        prompt_tokens=_int(prompt),
        completion_tokens=_int(completion),
        cached_tokens=_int(cached),
        cost=from_micros(_int(cost)),
    )


def to_csv(lines: list[UsageLine], group_by: GroupBy, currency: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "tenant",
            group_by,
            "requests",
            "calls",
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "cost",
            "currency",
        ]
    )
    for line in lines:
        writer.writerow(
            [
                line.tenant,
                line.group,
                line.requests,
                line.calls,
                line.prompt_tokens,
                line.completion_tokens,
                line.cached_tokens,
                f"{line.cost:f}",
                currency,
            ]
        )
    return out.getvalue()


def to_table(lines: list[UsageLine], group_by: GroupBy, currency: str) -> str:
    header = f"{'TENANT':<20} {group_by.upper():<24} {'CALLS':>8} {'PROMPT':>10} {'COMPLETION':>10} {'COST':>14}"
    rows = [
        f"{ljust(line.tenant, 20)} {ljust(line.group, 24)} {line.calls:>8} {line.prompt_tokens:>10} "
        f"{line.completion_tokens:>10} {line.cost:>14f}"
        for line in lines
    ]
    total = sum((line.cost for line in lines), Decimal(0))
    return "\n".join(
        [
            header,
            *rows,
            f"{'TOTAL':<20} {'':<24} {sum(x.calls for x in lines):>8} {'':>10} {'':>10} {total:>14f} {currency}",
        ]
    )
