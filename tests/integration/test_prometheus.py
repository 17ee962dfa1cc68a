"""A real Prometheus scrapes a running tokenyard on loopback.

After a few requests its HTTP API returns the services' series; every query of the shipped dashboard
and alert rules names a metric the live processes export; and the seed's latency alert, fed a slowed
worker, goes pending. The slowed worker is real: one chat worker with `--max-batch-size 1` gets six
long generations at once, so all but the first wait in its queue for the ones before them, and its p95
time to first token passes the real 500 ms threshold. The rule is the shipped one with two test-only
changes (say so, since they matter): its rate window is 30 s instead of 5 minutes and its `for` is
10 minutes, so it turns pending within seconds and stays pending (not firing) while we look.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openai import OpenAI

from tests.integration.processes import Cluster, free_port, wait_until
from tests.monitoring.promql import (
    ALERTS,
    PROMETHEUS_SERIES,
    dashboard_queries,
    exposed_names,
    is_exported,
    metric_names,
    rule_queries,
)

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (scripts/test-deps.sh)")
SEED_ALERT = "TokenyardWorkerTimeToFirstTokenHigh"


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, tiny_chat_model_dir: Path, tiny_embedding_model_dir: Path
) -> Iterator[Cluster]:
    running = Cluster(tmp_path_factory.mktemp("logs"), tmp_path_factory.mktemp("home"))
    try:
        running.start_controller()
        running.start_worker("chat", str(tiny_chat_model_dir), "--model-name", "tiny-chat", "--max-batch-size", "1")
        running.start_worker("embed", str(tiny_embedding_model_dir), "--model-name", "tiny-embed")
        running.start_gateway()
        assert wait_until(lambda: len(running.model_ids()) == 2, timeout=10), running.logs()
        yield running
    finally:
        running.stop()


def _targets(stack: Cluster) -> dict[str, list[str]]:
    workers = [f"127.0.0.1:{w.port}" for w in stack.workers.values()]  # type: ignore[attr-defined]
    return {
        "tokenyard-gateway": [stack.gateway_url.removeprefix("http://")],
        "tokenyard-controller": [stack.controller_url.removeprefix("http://")],
        "tokenyard-worker": workers,
    }


def _test_rules(path: Path) -> None:
    """The shipped seed rule, with a 30 s window and a long `for` (see the module docstring)."""
    rules = yaml.safe_load(ALERTS.read_text())
    rule = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == SEED_ALERT)
    assert "[5m]" in rule["expr"] and "> 0.5" in rule["expr"]
    rule = {**rule, "expr": rule["expr"].replace("[5m]", "[30s]"), "for": "10m"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "test", "rules": [rule]}]}))


@pytest.fixture(scope="module")
def prometheus(stack: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    assert PROMETHEUS is not None
    home = tmp_path_factory.mktemp("prometheus")
    _test_rules(home / "rules.yml")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yml"],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets}]} for job, targets in _targets(stack).items()
        ],
    }
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{free_port()}"
    log = (home / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={home / 'prometheus.yml'}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address={url.removeprefix('http://')}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=home,
    )
    try:
        up = wait_until(lambda: _all_targets_up(url, 4), timeout=60, interval=0.5)
        assert up, (home / "prometheus.log").read_text()[-3000:]
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _api(url: str, path: str, **params: str) -> Any:
    response = httpx.get(f"{url}/api/v1/{path}", params=params, timeout=5)
    response.raise_for_status()
    return response.json()["data"]


def _all_targets_up(url: str, count: int) -> bool:
    try:
        targets = _api(url, "targets")["activeTargets"]
    except httpx.HTTPError:
        return False
    return len(targets) == count and all(t["health"] == "up" for t in targets)


def _client(stack: Cluster) -> OpenAI:
    return OpenAI(base_url=f"{stack.gateway_url}/v1", api_key="unused", max_retries=0, timeout=120)


def _a_few_requests(stack: Cluster) -> None:
    with _client(stack) as client:
        client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "你好"}], max_tokens=8)
        stream = client.chat.completions.create(
            model="tiny-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=8, stream=True
        )
        assert any(chunk.choices for chunk in stream)
        client.embeddings.create(model="tiny-embed", input=["北京"])


def _series(url: str, query: str) -> list[dict[str, Any]]:
    return list(_api(url, "query", query=query)["result"])


def test_prometheus_has_the_series_after_a_few_requests(stack: Cluster, prometheus: str) -> None:
    _a_few_requests(stack)
    wanted = {
        'tokenyard_gateway_requests_total{model="tiny-chat",endpoint="chat",status="200"}': 2,
        'tokenyard_gateway_requests_total{model="tiny-embed",endpoint="embeddings",status="200"}': 1,
        'tokenyard_request_success_total{model="tiny-chat"}': 2,
    }

    def scraped() -> bool:
        return all(
            sum(float(s["value"][1]) for s in _series(prometheus, query)) >= count for query, count in wanted.items()
        )

    assert wait_until(scraped, timeout=20, interval=0.5), {q: _series(prometheus, q) for q in wanted}
    generated = _series(prometheus, 'tokenyard_generation_tokens_total{job="tokenyard-worker"}')
    assert generated and float(generated[0]["value"][1]) >= 2
    healthy = _series(prometheus, 'tokenyard_controller_workers{state="healthy"}')
    assert {s["metric"]["model"] for s in healthy if s["value"][1] == "1"} == {"tiny-chat", "tiny-embed"}


def test_every_dashboard_and_rule_query_names_exported_metrics(stack: Cluster, prometheus: str) -> None:
    exported: set[str] = set()
    for targets in _targets(stack).values():
        for target in targets:
            exported |= exposed_names(httpx.get(f"http://{target}/metrics", timeout=5).text)
    missing = {
        (name, query)
        for query in dashboard_queries() + rule_queries()
        for name in metric_names(query)
        if name not in PROMETHEUS_SERIES and not is_exported(name, exported)
    }
    assert not missing


def test_seed_alert_goes_pending_for_a_slowed_worker(stack: Cluster, prometheus: str) -> None:
    def long_generation(_: int) -> int:
        with _client(stack) as client:
            answer = client.completions.create(
                model="tiny-chat", prompt="Once", max_tokens=150, extra_body={"ignore_eos": True}
            )
        return answer.usage.completion_tokens if answer.usage else 0

    started = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(long_generation, range(6))) == [150] * 6
    elapsed = time.monotonic() - started
    ttft = 'tokenyard_time_to_first_token_seconds_bucket{model="tiny-chat"}'
    p95 = f"histogram_quantile(0.95, sum by (instance, le) (rate({ttft}[30s])))"

    def pending() -> bool:
        alerts = _api(prometheus, "alerts")["alerts"]
        return any(a["labels"]["alertname"] == SEED_ALERT and a["state"] == "pending" for a in alerts)

    assert wait_until(pending, timeout=20, interval=0.5), (elapsed, _series(prometheus, p95))
    alert = next(a for a in _api(prometheus, "alerts")["alerts"] if a["labels"]["alertname"] == SEED_ALERT)
    assert alert["labels"]["model"] == "tiny-chat" and float(alert["value"]) > 0.5


def test_request_id_is_in_every_service_log_as_json(stack: Cluster, prometheus: str) -> None:
    served = httpx.post(
        f"{stack.gateway_url}/v1/chat/completions",
        json={"model": "tiny-chat", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 4},
        headers={"X-Request-ID": "obs-trace-1"},
        timeout=60,
    )
    assert served.status_code == 200 and served.headers["x-request-id"] == "obs-trace-1"
    missing = httpx.post(
        f"{stack.gateway_url}/v1/chat/completions",
        json={"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
        headers={"X-Request-ID": "obs-trace-2"},
        timeout=60,
    )
    assert missing.status_code == 404

    def lines(service: str, request_id: str) -> list[dict[str, Any]]:
        text = (stack.log_dir / f"{service}.log").read_text(errors="replace")
        parsed = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        return [line for line in parsed if line.get("request_id") == request_id]

    assert wait_until(lambda: bool(lines("chat", "obs-trace-1")), timeout=10)
    (access,) = [line for line in lines("gateway", "obs-trace-1") if line["logger"] == "tokenyard.access"]
    assert access["status"] == 200 and access["model"] == "tiny-chat" and access["service"] == "gateway"
    assert access["worker"] and access["latency_ms"] > 0
    worker_line = lines("chat", "obs-trace-1")[0]
    assert worker_line["service"] == "worker" and "tokens in" in worker_line["message"]
    assert any("no worker for no-such-model" in line["message"] for line in lines("controller", "obs-trace-2"))
