"""The quota flags of `tokenyard tenants set`: --quota-calls, --quota-tokens, --quota-cost, --period."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import click

from tokenyard.governance.quota_admin import QuotaChange, QuotaView

QUOTA_FIELDS = ("quota_calls", "quota_tokens", "quota_cost", "period")


def _decimal(_ctx: click.Context, param: click.Parameter, value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"{value!r} is not a decimal amount", param=param) from None
    if amount < 0 or amount.as_tuple().exponent < -6:  # type: ignore[operator]
        raise click.BadParameter("must be >= 0 with at most 6 decimal places", param=param)
    return amount


def quota_options(function: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option("--quota-calls", type=click.IntRange(min=0), help="Calls per period (0: no limit)."),
            click.option("--quota-tokens", type=click.IntRange(min=0), help="Tokens per period (0: no limit)."),
            click.option("--quota-cost", callback=_decimal, help="Cost per period, billing currency (0: no limit)."),
            click.option("--period", type=click.Choice(["day", "month"]), help="Quota period, UTC.  [new: month]"),
        ]
    ):
        function = option(function)
    return function


def quota_change(fields: dict[str, Any]) -> QuotaChange | None:
    """The quota flags given (removed from `fields`), as a change; None if none was given."""
    values = {name: fields.pop(name, None) for name in QUOTA_FIELDS}
    given: dict[str, Any] = {}
    for flag, field in (("quota_calls", "calls"), ("quota_tokens", "tokens"), ("quota_cost", "cost")):
        if values[flag] is not None:
            given[field] = values[flag] or None  # 0 removes the limit
    if values["period"] is not None:
        given["period"] = values["period"]
    return QuotaChange(**given) if given else None


def describe(view: QuotaView | None) -> str:
    if view is None:
        return "quota: none"
    limits = [
        f"{view.max_calls} calls" if view.max_calls is not None else "",
        f"{view.max_tokens} tokens" if view.max_tokens is not None else "",
        f"cost {view.max_cost}" if view.max_cost is not None else "",
    ]
    used = f"used {view.used.calls} calls, {view.used.tokens} tokens"
    return f"quota: {', '.join(x for x in limits if x) or 'no limit'} per {view.period} ({used} this {view.period})"
