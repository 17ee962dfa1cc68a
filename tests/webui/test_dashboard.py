"""The operations dashboard at /dashboard: public HTML, data only with the admin key."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.integration.processes import Cluster
from tests.webui.conftest import ADMIN_KEY, CHAT_MODEL, EMBEDDING_MODEL

DATA_PATHS = ("/admin/workers", "/admin/requests?minutes=5")


@pytest.mark.parametrize("path", DATA_PATHS)
def test_admin_data_needs_the_admin_key(web_cluster: Cluster, path: str) -> None:
    url = f"{web_cluster.gateway_url}{path}"
    assert httpx.get(url, timeout=5).status_code == 401
    wrong = httpx.get(url, headers={"Authorization": "Bearer not-the-key"}, timeout=5)
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=5).status_code == 200
    assert httpx.get(f"{web_cluster.gateway_url}/dashboard", timeout=5).status_code == 200  # the page is public


def test_workers_endpoint_joins_controller_and_engine_views(web_cluster: Cluster) -> None:
    answer = httpx.get(
        f"{web_cluster.gateway_url}/admin/workers", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=5
    ).json()
    by_model = {w["models"][0]: w for w in answer["data"]}
    assert {CHAT_MODEL, EMBEDDING_MODEL} <= set(by_model)
    chat = by_model[CHAT_MODEL]
    assert chat["state"] == "healthy" and chat["kind"] == "generate"
    assert chat["kv_blocks_total"] > 0 and 0 <= chat["kv_usage"] <= 1
    assert chat["tokens_per_second"] is not None


def test_dashboard_lists_the_worker_and_charts_the_traffic(web_cluster: Cluster, page: Page, artifacts: Path) -> None:
    for _ in range(3):
        body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
        assert httpx.post(f"{web_cluster.gateway_url}/v1/chat/completions", json=body, timeout=60).status_code == 200
    page.goto(f"{web_cluster.gateway_url}/dashboard")
    page.fill("#admin-key", ADMIN_KEY)
    page.click("#key-form button[type=submit]")

    chat_row = page.locator("#workers tbody tr", has_text=CHAT_MODEL)
    expect(chat_row).to_contain_text("healthy")
    expect(chat_row.locator("td").nth(6)).to_contain_text("%")  # KV cache use
    expect(page.locator("#workers tbody tr", has_text=EMBEDDING_MODEL)).to_have_count(1)
    page.wait_for_function("Number(document.getElementById('chart-rate').dataset.points) > 0")
    page.wait_for_function("Number(document.getElementById('chart-latency').dataset.points) > 0")
    page.wait_for_function("Number(document.getElementById('chart-ttft').dataset.points) > 0")
    totals = page.locator("#totals").inner_text()
    assert int(totals.split()[0]) >= 3, totals
    assert not page.script_errors  # type: ignore[attr-defined]
    page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)


def test_a_wrong_admin_key_is_said_in_words(web_cluster: Cluster, page: Page) -> None:
    page.goto(f"{web_cluster.gateway_url}/dashboard")
    page.fill("#admin-key", "wrong")
    page.click("#key-form button[type=submit]")
    expect(page.locator("#error")).to_contain_text("The admin key was refused")
    expect(page.locator("#workers tbody tr")).to_have_count(0)


def test_dashboard_helpers_sum_costs_exactly_and_defuse_csv(web_cluster: Cluster, page: Page) -> None:
    page.goto(f"{web_cluster.gateway_url}/dashboard")
    assert page.evaluate("TYDashboard.addDecimals(['0.1', '0.2', '0.000000001'])") == "0.300000001"
    assert page.evaluate("TYDashboard.addDecimals(['1.5', '-0.25'])") == "1.25"
    assert page.evaluate("TYDashboard.csvField('=HYPERLINK(\"x\")')") == '"\'=HYPERLINK(""x"")"'
    assert page.evaluate("TYDashboard.csvField('北京, 上海')") == '"北京, 上海"'


def test_usage_per_tenant_with_chart_table_and_csv(web_cluster: Cluster, page: Page, tmp_path: Path) -> None:
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "count me"}], "max_tokens": 5}
    assert httpx.post(f"{web_cluster.gateway_url}/v1/chat/completions", json=body, timeout=60).status_code == 200
    page.goto(f"{web_cluster.gateway_url}/dashboard")
    page.fill("#admin-key", ADMIN_KEY)
    page.click("#key-form button[type=submit]")
    tenant_row = page.locator("#usage tbody tr", has_text="default")
    expect(tenant_row).to_have_count(1, timeout=20_000)  # the usage record reaches the store within seconds
    cells = tenant_row.locator("td").all_inner_texts()
    assert int(cells[1]) >= 1 and int(cells[4]) >= 5, cells  # calls, completion tokens
    page.wait_for_function("Number(document.getElementById('chart-usage').dataset.points) > 0")

    with page.expect_download() as download:
        page.click("#usage-csv")
    saved = tmp_path / "usage.csv"
    download.value.save_as(saved)
    lines = saved.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "tenant,calls,requests,prompt_tokens,completion_tokens,cost,since,until"
    row = next(line for line in lines[1:] if line.startswith("default,"))
    assert row.split(",")[1:3] == cells[1:3]
