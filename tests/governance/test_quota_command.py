"""Quotas from the shell (`tokenyard tenants set --quota-*`) and over the admin API, and /admin/usage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from tokenyard.cli import cli
from tokenyard.config import GatewayConfig, Settings
from tokenyard.gateway.app import create_app
from tokenyard.governance.quota_admin import get_quota
from tokenyard.governance.records import UsageRecord
from tokenyard.governance.usage_writer import StoreWriter
from tokenyard.store import Store

ADMIN = {"Authorization": "Bearer admin-key-for-quota-tests"}


def test_tenants_set_takes_quota_flags_and_zero_removes_a_limit(tmp_path: Path, sqlite_url: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": sqlite_url}}))
    runner = CliRunner()
    at = ["--config", str(config)]
    first = runner.invoke(cli, ["tenants", "set", "研发部", "--quota-calls", "5", "--quota-cost", "12.5", *at])
    assert first.exit_code == 0, first.output
    assert "quota: 5 calls, cost 12.500000 per month" in first.output
    second = runner.invoke(cli, ["tenants", "set", "研发部", "--quota-calls", "0", "--quota-tokens", "1000", *at])
    assert second.exit_code == 0, second.output
    third = runner.invoke(cli, ["tenants", "set", "研发部", "--period", "day", *at])
    assert "per day" in third.output
    store = Store(sqlite_url)
    view = get_quota(store, "tenant", "研发部")
    store.close()
    assert view is not None
    assert (view.max_calls, view.max_tokens, view.max_cost, view.period) == (None, 1000, Decimal("12.5"), "day")
    bad = runner.invoke(cli, ["tenants", "set", "x", "--quota-cost", "0.0000001", *at])
    assert bad.exit_code != 0 and "6 decimal places" in bad.output


@pytest.fixture
async def admin(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        gateway=GatewayConfig(controller="http://127.0.0.1:9"),
        admin_key="admin-key-for-quota-tests",  # type: ignore[arg-type]
    )
    app = create_app(settings, store=store)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


async def test_quotas_over_the_admin_api(admin: httpx.AsyncClient) -> None:
    assert (await admin.get("/admin/quotas/tenant/acme")).status_code == 401  # no admin key
    missing = await admin.get("/admin/quotas/tenant/acme", headers=ADMIN)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "quota_not_found"
    changed = await admin.put("/admin/quotas/key/ty-abc", json={"calls": 3, "period": "day"}, headers=ADMIN)
    assert changed.status_code == 200, changed.text
    assert changed.json() == {
        "scope": "key", "subject": "ty-abc", "period": "day", "calls": 3, "tokens": None, "cost": None,
        "used": {"calls": 0, "tokens": 0, "cost": "0.000000"},
    }  # fmt: skip
    refused = await admin.put("/admin/quotas/key/ty-abc", json={"calls": -1}, headers=ADMIN)
    assert refused.status_code == 400
    assert (await admin.delete("/admin/quotas/key/ty-abc", headers=ADMIN)).json()["deleted"] is True


async def test_usage_over_the_admin_api_as_json_and_csv(admin: httpx.AsyncClient, store: Store) -> None:
    when = datetime(2026, 12, 1, 9, tzinfo=timezone.utc)
    record = UsageRecord(
        id="r1", request_id="q1", created_at=when, tenant="acme", model="m", endpoint="/v1/chat/completions",
        status=200, prompt_tokens=10, completion_tokens=4, billed_completion_tokens=4, calls_billed=1,
        cost=Decimal("0.25"),
    )  # fmt: skip
    StoreWriter(store)([{"usage": record.model_dump(mode="json")}])
    found = await admin.get("/admin/usage", params={"tenant": "acme", "group_by": "model"}, headers=ADMIN)
    assert found.json()["data"] == [
        {"tenant": "acme", "group": "m", "requests": 1, "calls": 1, "prompt_tokens": 10, "completion_tokens": 4,
         "cached_tokens": 0, "cost": "0.250000"}
    ]  # fmt: skip
    csv_text = (await admin.get("/admin/usage", params={"format": "csv", "since": "2026-12-02"}, headers=ADMIN)).text
    assert csv_text.splitlines() == [
        "tenant,day,requests,calls,prompt_tokens,completion_tokens,cached_tokens,cost,currency"
    ]
