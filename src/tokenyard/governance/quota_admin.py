"""Setting and reading quotas: what `tokenyard tenants set --quota-*` and the admin API call."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, select

from tokenyard.governance.periods import Period, period_start
from tokenyard.governance.quotas import Amounts, from_micros, to_micros
from tokenyard.store import QuotaCounter, QuotaRow, Store
from tokenyard.store.models import utcnow


@dataclass(frozen=True)
class QuotaView:
    """A quota as reported: its limits and what the current period has used (settled + reserved)."""

    scope: str
    subject: str
    period: str
    max_calls: int | None
    max_tokens: int | None
    max_cost: Decimal | None
    used: Amounts

    def as_dict(self) -> dict[str, object]:
        return {
            "scope": self.scope,
            "subject": self.subject,
            "period": self.period,
            "calls": self.max_calls,
            "tokens": self.max_tokens,
            "cost": None if self.max_cost is None else str(self.max_cost),
            "used": {
                "calls": self.used.calls,
                "tokens": self.used.tokens,
                "cost": str(from_micros(self.used.cost_micros)),
            },
        }


class QuotaChange(BaseModel):
    """A change to a quota (the admin API's body): only the fields given change; null removes a limit."""

    model_config = ConfigDict(extra="forbid")

    period: Period | None = None
    calls: int | None = Field(default=None, ge=0)
    tokens: int | None = Field(default=None, ge=0)
    cost: Decimal | None = Field(default=None, ge=0, decimal_places=6)


def set_quota(store: Store, scope: str, subject: str, change: QuotaChange) -> None:
    """Create or change a quota (a new one counts per month unless `period` says otherwise)."""
    given = change.model_fields_set
    with store.session() as session:
        row = session.scalars(select(QuotaRow).where(QuotaRow.scope == scope, QuotaRow.subject == subject)).first()
        if row is None:
            row = QuotaRow(scope=scope, subject=subject, period="month")
            session.add(row)
        if change.period is not None:
            row.period = change.period
        if "calls" in given:
            row.max_calls = change.calls
        if "tokens" in given:
            row.max_tokens = change.tokens
        if "cost" in given:
            row.max_cost_micros = None if change.cost is None else to_micros(change.cost)
        row.updated_at = utcnow()


def remove_quota(store: Store, scope: str, subject: str) -> bool:
    with store.session() as session:
        result = session.execute(delete(QuotaRow).where(QuotaRow.scope == scope, QuotaRow.subject == subject))
        return bool(result.rowcount)  # type: ignore[attr-defined]


def get_quota(store: Store, scope: str, subject: str, now: datetime | None = None) -> QuotaView | None:
    """The quota and its use in the current period, from the SQL counters (gateways without Redis)."""
    now = now or datetime.now(timezone.utc)
    with store.session() as session:
        row = session.scalars(select(QuotaRow).where(QuotaRow.scope == scope, QuotaRow.subject == subject)).first()
        if row is None:
            return None
        counter = session.scalars(
            select(QuotaCounter).where(
                QuotaCounter.scope == scope,
                QuotaCounter.subject == subject,
                QuotaCounter.period_start == period_start(row.period, now),  # type: ignore[arg-type]
            )
        ).first()
        used = Amounts(counter.calls, counter.tokens, counter.cost_micros) if counter else Amounts()
        max_cost = None if row.max_cost_micros is None else from_micros(row.max_cost_micros)
        return QuotaView(scope, subject, row.period, row.max_calls, row.max_tokens, max_cost, used)
