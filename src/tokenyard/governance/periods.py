"""Quota periods: a UTC day or a UTC calendar month, named by where they start."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Literal

Period = Literal["day", "month"]


def period_start(period: Period, now: datetime) -> str:
    """'2026-12-01' for a day, '2026-12' for a month (UTC)."""
    now = now.astimezone(timezone.utc)
    return now.strftime("%Y-%m-%d") if period == "day" else now.strftime("%Y-%m")


def period_end(period: Period, now: datetime) -> datetime:
    """The first instant of the next period (UTC)."""
    now = now.astimezone(timezone.utc)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return midnight + timedelta(days=1)
    first = midnight.replace(day=1)
    return first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)


def seconds_left(period: Period, now: datetime) -> float:
    return (period_end(period, now) - now.astimezone(timezone.utc)).total_seconds()
