"""Fault scenarios across separate hosts (network namespaces): controller, two workers, gateway.

Each scenario runs streaming load at temperature 0 while one fault strikes, then asserts that every
request completed with exactly the text an unbroken stream gives (nothing lost, nothing duplicated)
and that the faulty worker left the registry within its bound.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.integration import netns
from tests.integration.processes import service_env, wait_until

REASON = netns.available()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

MODEL = "tiny-chat"
INTERVAL = 1.0  # heartbeat seconds
STALL = 3.0  # gateway: seconds of silence before a stream counts as frozen
TOKEN = "netns-test-token"
BODY = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "讲一个故事 about the sea"}],
    "max_tokens": 1000,  # long enough that a fault reliably lands mid-stream
    "ignore_eos": True,
    "temperature": 0,
    "stream": True,
}


@dataclass
class Hosts:
    bed: netns.NetnsBed
    gateway_url: str
    controller_url: str
    worker_hosts: list[str] = field(default_factory=list)

    def workers(self) -> list[dict[str, object]]:
        headers = {"x-tokenyard-cluster-token": TOKEN}
        return httpx.get(f"{self.controller_url}/workers", headers=headers, timeout=5).json()["workers"]  # type: ignore[no-any-return]

    def healthy(self) -> int:
        return sum(1 for w in self.workers() if w["state"] == "healthy")


@pytest.fixture
def hosts(tmp_path: Path, tiny_chat_model_dir: Path) -> Iterator[Hosts]:
    env = service_env(tmp_path / "home")
    env.update(TOKENYARD_CLUSTER__TOKEN=TOKEN, TOKENYARD_GATEWAY__STALL_TIMEOUT=str(STALL))
    bed = netns.NetnsBed(tmp_path, env)
    try:
        controller_ip = bed.add_host("c")
        controller_url = f"http://{controller_ip}:21001"
        bed.run("c", "controller", ["controller", "--host", controller_ip])
        running = Hosts(bed, "", controller_url)
        for host in ("w1", "w2"):
            address = bed.add_host(host)
            args = [
                "worker",
                "--model",
                str(tiny_chat_model_dir),
                "--model-name",
                MODEL,
                "--dtype",
                "float32",
                "--host",
                address,
                "--controller",
                controller_url,
                "--heartbeat-interval",
                str(INTERVAL),
            ]
            bed.run(host, host, args)
            running.worker_hosts.append(host)
        gateway_ip = bed.add_host("g")
        bed.run("g", "gateway", ["gateway", "--host", gateway_ip, "--controller", controller_url])
        running.gateway_url = f"http://{gateway_ip}:8000"

        def ready() -> bool:  # the controller may still be starting: a refused connection means "not yet"
            try:
                return _get_ok(f"{running.gateway_url}/health") and running.healthy() == 2
            except httpx.HTTPError:
                return False

        assert wait_until(ready, timeout=120, interval=0.5), _logs(bed)
        yield running
    finally:
        bed.close()


def _get_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _logs(bed: netns.NetnsBed) -> str:
    return "\n".join(f"--- {s.name} ---\n{s.logs()[-3000:]}" for s in bed.services)


def _stream(url: str) -> tuple[str, bool]:
    """The streamed text, and whether the stream ended cleanly (no error event, one [DONE])."""
    text, clean = [], True
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=BODY, timeout=120) as response:
        if response.status_code != 200:
            return "", False
        lines = [line for line in response.iter_lines() if line]
    for line in lines[:-1]:
        data = json.loads(line[len("data: ") :])
        if "error" in data:
            clean = False
        for choice in data.get("choices", []):
            text.append(choice["delta"].get("content") or "")
    return "".join(text), clean and lines[-1] == "data: [DONE]"


@dataclass
class LoadResult:
    sent: int = 0
    completed: int = 0
    failed: list[str] = field(default_factory=list)


def _under_load(url: str, fault: Callable[[], None], reference: str, seconds: float = 12.0) -> LoadResult:
    """Four clients stream back to back; the fault strikes after two seconds."""
    result, stop, lock = LoadResult(), threading.Event(), threading.Lock()

    def client() -> None:
        while not stop.is_set():
            text, clean = _stream(url)
            with lock:
                result.sent += 1
                if clean and text == reference:
                    result.completed += 1
                else:
                    result.failed.append(f"clean={clean} text_ok={text == reference} len={len(text)}")

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    fault()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(120)
    return result


def _report(scenario: str, result: LoadResult, **figures: float) -> None:
    """Append the measured figures for docs/reliability.md when TOKENYARD_RELIABILITY_REPORT is set."""
    path = os.environ.get("TOKENYARD_RELIABILITY_REPORT")
    if path:
        with open(path, "a") as out:
            row = {
                "scenario": scenario,
                "sent": result.sent,
                "completed": result.completed,
                "failed": len(result.failed),
                **figures,
            }
            out.write(json.dumps(row) + "\n")


def _busy_worker(hosts: Hosts) -> str:
    """A worker host that is streaming right now, so the fault breaks streams mid-way.

    Asked of each worker itself (its /status), not of the controller, whose copy is up to a
    heartbeat old: with a fast engine a stream can end within a heartbeat interval."""
    headers = {"x-tokenyard-cluster-token": TOKEN}
    for _ in range(100):
        for worker in hosts.workers():
            address = str(worker["address"])
            try:
                live = httpx.get(f"{address}/status", headers=headers, timeout=2).json()
            except httpx.HTTPError:
                continue
            if int(live["num_running"]) > 0:
                return next(h for h in hosts.worker_hosts if hosts.bed.hosts[h] in address)
        time.sleep(0.02)
    raise AssertionError("no worker reported running requests under load")


def _resumes(hosts: Hosts) -> int:
    # The whole log: logs() is only its tail, and access lines written after the fault push it out.
    gateways = [s for s in hosts.bed.services if s.name == "gateway"]
    return sum(s.log_path.read_text(errors="replace").count("resuming") for s in gateways)


def _evicted_within(hosts: Hosts, started: float, bound: float) -> float:
    assert wait_until(lambda: hosts.healthy() == 1, timeout=bound + 5, interval=0.1), _logs(hosts.bed)
    return time.monotonic() - started


@pytest.mark.parametrize("fault", ["sigkill", "link-down", "sigstop"])
def test_worker_fault_under_load_loses_no_request(hosts: Hosts, fault: str) -> None:
    reference, clean = _stream(hosts.gateway_url)
    assert clean and reference
    struck: dict[str, float] = {}

    def strike() -> None:
        victim = _busy_worker(hosts)
        service = next(s for s in hosts.bed.services if s.name == victim)
        struck["at"] = time.monotonic()
        if fault == "sigkill":
            service.signal(signal.SIGKILL)
        elif fault == "sigstop":
            service.signal(signal.SIGSTOP)
        else:
            hosts.bed.cut(victim)
        struck["eviction"] = _evicted_within(hosts, struck["at"], 3 * INTERVAL + STALL)

    result = _under_load(hosts.gateway_url, strike, reference)
    resumed = _resumes(hosts)
    _report(fault, result, eviction_s=round(struck["eviction"], 2), resumed=resumed)
    assert result.failed == [], (result.failed, _logs(hosts.bed))
    assert resumed >= 1, "the fault should have broken at least one stream mid-way"
    assert result.completed >= 8
    assert struck["eviction"] <= 3 * INTERVAL + STALL


def test_controller_restart_under_load_loses_no_request(hosts: Hosts) -> None:
    reference, _ = _stream(hosts.gateway_url)
    controller = next(s for s in hosts.bed.services if s.name == "controller")
    recovered: dict[str, float] = {}

    def restart() -> None:
        controller.signal(signal.SIGKILL)
        controller.wait(timeout=10)
        time.sleep(2.0)  # two seconds with no controller at all
        restarted = hosts.bed.run("c", "controller", controller.args)
        started = time.monotonic()
        assert wait_until(lambda: _get_ok(f"{hosts.controller_url}/health"), timeout=30, interval=0.05)
        up = time.monotonic()
        assert wait_until(lambda: hosts.healthy() == 2, timeout=10, interval=0.05), restarted.logs()
        recovered["workers_back_s"] = time.monotonic() - up
        recovered["restart_s"] = up - started

    result = _under_load(hosts.gateway_url, restart, reference)
    _report("controller-restart", result, **{k: round(v, 2) for k, v in recovered.items()})
    assert result.failed == [], (result.failed, _logs(hosts.bed))
    assert recovered["workers_back_s"] <= INTERVAL + 0.5
