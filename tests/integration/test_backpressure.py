"""Saturation and slowness end in clean, early answers: 429 with Retry-After, timeouts that abort."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import CHAT_MODEL
from tests.integration.processes import Cluster, wait_until

LONG = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "go"}], "max_tokens": 400, "ignore_eos": True}


@pytest.fixture
def narrow(tmp_path: Path, tiny_chat_model_dir: Path) -> Iterator[Cluster]:
    """One worker that runs one request and queues one more; a gateway with a 0.5 s request timeout.

    The timeout must stay well under the time the tiny model takes for 1,800 tokens: one-call decode
    steps brought that under 2 s on a 2-core CPU (about 1 ms a token), which a 2 s timeout no longer
    caught."""
    running = Cluster(tmp_path, tmp_path / "home")
    running.env["TOKENYARD_WORKER__MAX_QUEUE_LENGTH"] = "1"
    running.env["TOKENYARD_GATEWAY__REQUEST_TIMEOUT"] = "0.5"
    try:
        running.start_controller()
        running.start_worker("chat", str(tiny_chat_model_dir), "--model-name", CHAT_MODEL, "--max-batch-size", "1")
        running.start_gateway()
        assert wait_until(lambda: running.model_ids() == [CHAT_MODEL], timeout=10), running.logs()
        running.wait_past_startup_grace()
        yield running
    finally:
        running.stop()


def test_saturated_worker_answers_429_with_retry_after(narrow: Cluster) -> None:
    def call(_: int) -> httpx.Response:
        return httpx.post(f"{narrow.gateway_url}/v1/chat/completions", json=LONG, timeout=60)

    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(call, range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 429, 504}, [r.text for r in responses]
    refused = [r for r in responses if r.status_code == 429]
    assert refused, statuses
    for response in refused:
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["type"] == "rate_limit_error"


def test_request_timeout_is_a_clean_error_and_aborts_the_generation(narrow: Cluster) -> None:
    endless = {**LONG, "max_tokens": 1800}
    response = httpx.post(f"{narrow.gateway_url}/v1/chat/completions", json=endless, timeout=60)
    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "timeout"
    with httpx.stream(
        "POST", f"{narrow.gateway_url}/v1/chat/completions", json={**endless, "stream": True}, timeout=60
    ) as stream:
        lines = [line for line in stream.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert '"code":"timeout"' in lines[-2]
    worker = narrow.workers["chat"]
    status = lambda: httpx.get(f"http://127.0.0.1:{worker.port}/status", timeout=5).json()  # type: ignore[attr-defined]  # noqa: E731
    assert wait_until(lambda: status()["num_running"] == 0, timeout=5), worker.logs()
