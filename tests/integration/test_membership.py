"""Workers joining, dying, draining and outliving a controller restart, with real processes."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import CHAT_MODEL
from tests.integration.processes import Cluster, wait_until

INTERVAL = 1.0  # heartbeat seconds for these tests
LONG_STREAM = {
    "model": CHAT_MODEL,
    "messages": [{"role": "user", "content": "go on"}],
    "max_tokens": 200,
    "ignore_eos": True,
    "stream": True,
}


@pytest.fixture
def small_cluster(tmp_path: Path, tiny_chat_model_dir: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path, tmp_path / "home", heartbeat_interval=INTERVAL)
    try:
        running.start_controller()
        running.start_worker("chat", str(tiny_chat_model_dir), "--model-name", CHAT_MODEL)
        running.start_gateway()
        assert wait_until(lambda: running.model_ids() == [CHAT_MODEL], timeout=10), running.logs()
        running.wait_past_startup_grace()
        yield running
    finally:
        running.stop()


def test_killed_worker_leaves_models_within_three_intervals(small_cluster: Cluster) -> None:
    small_cluster.workers["chat"].signal(signal.SIGKILL)
    killed_at = time.monotonic()
    assert wait_until(lambda: small_cluster.model_ids() == [], timeout=10), small_cluster.logs()
    elapsed = time.monotonic() - killed_at
    # Three silent intervals, plus the controller's sweep and the gateway's model-list cache.
    assert elapsed < 3 * INTERVAL + 1.0, f"took {elapsed:.2f}s"
    response = httpx.post(
        f"{small_cluster.gateway_url}/v1/chat/completions",
        json={"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_healthy_worker"


def test_restarted_controller_has_worker_back_within_one_interval(small_cluster: Cluster) -> None:
    assert small_cluster.controller is not None
    small_cluster.controller.signal(signal.SIGKILL)
    small_cluster.controller.stop()
    small_cluster.start_controller()
    back_at = time.monotonic()
    assert wait_until(lambda: len(small_cluster.registered_worker_ids()) == 1, timeout=5), small_cluster.logs()
    assert time.monotonic() - back_at < INTERVAL + 0.5
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    response = httpx.post(f"{small_cluster.gateway_url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 200, response.text


def _read_stream(url: str, lines: list[str], started: threading.Event) -> None:
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=LONG_STREAM, timeout=60) as response:
        for line in response.iter_lines():
            if line:
                lines.append(line)
                started.set()


def test_sigterm_drains_in_flight_stream_then_unregisters(small_cluster: Cluster) -> None:
    lines: list[str] = []
    started = threading.Event()
    reader = threading.Thread(target=_read_stream, args=(small_cluster.gateway_url, lines, started))
    reader.start()
    assert started.wait(30), small_cluster.logs()
    worker = small_cluster.workers["chat"]
    worker.signal(signal.SIGTERM)
    reader.join(60)
    assert lines[-1] == "data: [DONE]"
    assert any('"finish_reason":"length"' in line for line in lines), lines[-3:]
    assert not any('"error"' in line for line in lines)
    # uvicorn re-raises the signal after its graceful shutdown, so the exit status says SIGTERM.
    assert worker.wait(timeout=30) in (0, -signal.SIGTERM)
    # It left the registry by unregistering, not by expiring.
    workers = httpx.get(f"{small_cluster.controller_url}/workers", timeout=5).json()["workers"]
    assert workers == []


def test_client_disconnect_aborts_generation_on_worker(small_cluster: Cluster) -> None:
    endless = {**LONG_STREAM, "max_tokens": 1800}  # far longer than the test takes
    with httpx.stream("POST", f"{small_cluster.gateway_url}/v1/chat/completions", json=endless, timeout=60) as response:
        first = next(line for line in response.iter_lines() if line.startswith("data: {"))
    completion_id = first.split('"id":"', 1)[1].split('"', 1)[0]
    worker = small_cluster.workers["chat"]
    assert wait_until(lambda: f"{completion_id}-0 aborted" in worker.logs(), timeout=10), worker.logs()
    status = httpx.get(f"http://127.0.0.1:{worker.port}/status", timeout=5).json()  # type: ignore[attr-defined]
    assert status["num_running"] == 0


def test_client_disconnect_aborts_non_streamed_generation(small_cluster: Cluster) -> None:
    endless = {**LONG_STREAM, "max_tokens": 1800, "stream": False}
    worker = small_cluster.workers["chat"]
    status = lambda: httpx.get(f"http://127.0.0.1:{worker.port}/status", timeout=5).json()  # type: ignore[attr-defined]  # noqa: E731
    host, port = small_cluster.gateway_url.removeprefix("http://").split(":")
    body = json.dumps(endless).encode()
    # A raw socket, so the test decides exactly when the client goes away: once the worker is generating.
    # The gateway then cancels the request once; that cancellation used to be lost when a chunk was
    # already waiting (asyncio.wait_for before Python 3.12, see merge_streams), which a loaded machine
    # made likely: the worker then ran all 1,800 tokens and logged "(length)", never "aborted after".
    with socket.create_connection((host, int(port))) as sock:
        head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        assert wait_until(lambda: status()["num_running"] == 1, timeout=30), worker.logs()
    assert wait_until(lambda: "aborted after" in worker.logs(), timeout=10), worker.logs()
    assert wait_until(lambda: status()["num_running"] == 0, timeout=5)


def test_only_worker_dying_mid_stream_ends_with_an_error_event_then_done(small_cluster: Cluster) -> None:
    # With no other worker to resume on, the client learns why the stream ended.
    endless = {**LONG_STREAM, "max_tokens": 1800}
    lines: list[str] = []
    with httpx.stream("POST", f"{small_cluster.gateway_url}/v1/chat/completions", json=endless, timeout=60) as response:
        for line in response.iter_lines():
            if not line:
                continue
            lines.append(line)
            if len(lines) == 3:
                small_cluster.workers["chat"].signal(signal.SIGKILL)
    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2][len("data: ") :])["error"]
    assert error["code"] == "no_healthy_worker" and error["message"]
    assert sum(line == "data: [DONE]" for line in lines) == 1
