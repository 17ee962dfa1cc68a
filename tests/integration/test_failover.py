"""Two workers of one model: when one dies, requests move to the other and none is lost."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import CHAT_MODEL
from tests.integration.processes import Cluster, wait_until

INTERVAL = 2.0  # the default heartbeat: eviction by expiry alone would take 6 s


@pytest.fixture
def pair(tmp_path: Path, tiny_chat_model_dir: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path, tmp_path / "home", heartbeat_interval=INTERVAL)
    try:
        running.start_controller()
        running.start_worker("a", str(tiny_chat_model_dir), "--model-name", CHAT_MODEL)
        running.start_worker("b", str(tiny_chat_model_dir), "--model-name", CHAT_MODEL)
        running.start_gateway()
        assert wait_until(lambda: len(running.registered_worker_ids()) == 2, timeout=10), running.logs()
        yield running
    finally:
        running.stop()


def _chat(url: str, i: int) -> int:
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": f"hello {i}"}], "max_tokens": 4}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30).status_code


def test_requests_fail_over_when_a_worker_is_killed(pair: Cluster) -> None:
    pair.workers["a"].signal(signal.SIGKILL)
    killed_at = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda i: _chat(pair.gateway_url, i), range(12)))
    assert statuses == [200] * 12, pair.logs()
    # The gateway reported the dead worker; the controller probed and evicted it long before expiry.
    assert wait_until(lambda: len(pair.registered_worker_ids()) == 1, timeout=3 * INTERVAL)
    assert time.monotonic() - killed_at < 3 * INTERVAL
    assert "failed probe" in (pair.controller.logs() if pair.controller else "")


def test_last_worker_gone_is_503_before_any_token(pair: Cluster) -> None:
    pair.workers["a"].signal(signal.SIGKILL)
    pair.workers["b"].signal(signal.SIGKILL)
    response = httpx.post(
        f"{pair.gateway_url}/v1/chat/completions",
        json={"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_healthy_worker"
