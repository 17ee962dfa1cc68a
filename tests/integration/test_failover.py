"""Two workers of one model: when one dies, requests move to the other and none is lost."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import CHAT_MODEL
from tests.integration.processes import Cluster, wait_until

INTERVAL = 2.0  # the default heartbeat: eviction by expiry alone would take 6 s
STALL = 3.0  # seconds of silence before the gateway treats a worker's stream as frozen


@pytest.fixture
def pair(tmp_path: Path, tiny_chat_model_dir: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path, tmp_path / "home", heartbeat_interval=INTERVAL)
    running.env["TOKENYARD_GATEWAY__STALL_TIMEOUT"] = str(STALL)
    try:
        running.start_controller()
        # float32: a resumed stream must reproduce an unbroken one token for token.
        running.start_worker("a", str(tiny_chat_model_dir), "--model-name", CHAT_MODEL, "--dtype", "float32")
        running.start_worker("b", str(tiny_chat_model_dir), "--model-name", CHAT_MODEL, "--dtype", "float32")
        running.start_gateway()
        assert wait_until(lambda: len(running.registered_worker_ids()) == 2, timeout=10), running.logs()
        running.wait_past_startup_grace()
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


def _stream_text(url: str, body: dict[str, object], on_chunk: Callable[[int], None] = lambda n: None) -> list[str]:
    lines: list[str] = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line:
                lines.append(line)
                on_chunk(len(lines))
    return lines


def _busy_worker(pair: Cluster) -> str:
    for name, worker in pair.workers.items():
        status = httpx.get(f"http://127.0.0.1:{worker.port}/status", timeout=5).json()  # type: ignore[attr-defined]
        if status["num_running"]:
            return name
    raise AssertionError("no worker is generating")


LONG_GREEDY_STREAM = {
    "model": CHAT_MODEL,
    "messages": [{"role": "user", "content": "写一首关于春天的诗 and tell a story"}],
    "max_tokens": 600,
    "ignore_eos": True,
    "temperature": 0,
    "stream": True,
    "stream_options": {"include_usage": True},
}


@pytest.mark.parametrize("fault", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "frozen"])
def test_stream_broken_mid_way_resumes_on_another_worker_without_gap_or_duplicate(
    pair: Cluster, fault: signal.Signals
) -> None:
    body = LONG_GREEDY_STREAM
    reference = _stream_text(pair.gateway_url, body)
    faulty: list[str] = []

    def break_serving_worker(count: int) -> None:
        if count == 20:
            faulty.append(_busy_worker(pair))
            pair.workers[faulty[0]].signal(fault)

    try:
        resumed = _stream_text(pair.gateway_url, body, break_serving_worker)
    finally:
        if faulty:
            pair.workers[faulty[0]].signal(signal.SIGCONT)
    assert resumed[-1] == "data: [DONE]" and sum(line == "data: [DONE]" for line in resumed) == 1
    assert not any('"error"' in line for line in resumed), resumed[-3:]
    assert _content(resumed) == _content(reference)
    usage = json.loads(resumed[-2][len("data: ") :])["usage"]
    assert usage["completion_tokens"] == 600
    assert usage["prompt_tokens"] == json.loads(reference[-2][len("data: ") :])["usage"]["prompt_tokens"]
    assert "resuming" in (pair.gateway.logs() if pair.gateway else "")


def _content(lines: list[str]) -> str:
    parts = []
    for line in lines:
        if line.startswith("data: {"):
            for choice in json.loads(line[len("data: ") :])["choices"]:
                parts.append(choice["delta"].get("content") or "")
    return "".join(parts)


def test_gateway_serves_from_last_known_routes_while_the_controller_is_down(pair: Cluster) -> None:
    assert pair.controller is not None
    time.sleep(2.5)  # at least one route refresh since both workers registered
    pair.controller.signal(signal.SIGKILL)
    pair.controller.stop()
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda i: _chat(pair.gateway_url, i), range(8)))
    assert statuses == [200] * 8, pair.logs()
    # A worker that dies during the outage is skipped on the next attempt, not retried forever.
    pair.workers["a"].signal(signal.SIGKILL)
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda i: _chat(pair.gateway_url, i), range(8)))
    assert statuses == [200] * 8, pair.logs()


def test_rolling_restart_under_load_loses_nothing(pair: Cluster, tiny_chat_model_dir: Path) -> None:
    statuses: list[int] = []
    stop = threading.Event()

    def load(seed: int) -> None:
        i = 0
        while not stop.is_set():
            statuses.append(_chat(pair.gateway_url, seed * 1000 + i))
            i += 1

    threads = [threading.Thread(target=load, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    try:
        for old, new in (("a", "a2"), ("b", "b2")):
            pair.workers[old].signal(signal.SIGTERM)
            pair.workers[old].wait(timeout=60)
            pair.start_worker(new, str(tiny_chat_model_dir), "--model-name", CHAT_MODEL, "--dtype", "float32")
            assert wait_until(lambda: len(pair.registered_worker_ids()) == 2, timeout=10), pair.logs()
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert len(statuses) > 20
    assert set(statuses) == {200}, [s for s in statuses if s != 200]
