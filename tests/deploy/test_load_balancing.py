"""nginx and HAProxy, with the shipped configs, in front of two real gateways under streaming load.

A controller and one tiny-model worker serve the whole module; each case starts two fresh
gateways and the proxy, runs a bounded stream of streaming chat requests through the proxy, and
stops one gateway part-way: with SIGTERM it drains and no client sees a failure; with SIGKILL the
streams it was serving are cut, and every request sent after the kill is served by the other one.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import yaml

from tests.deploy import proxies
from tests.integration.processes import Cluster, Service, free_port, wait_until

MODEL = "tiny-chat"
HELM_VALUES = proxies.REPO / "deploy" / "helm" / "tokenyard" / "values.yaml"
CLIENTS = 4
AFTER_SIGNAL = 2  # requests each client sends once the gateway has been signalled
MAX_PER_CLIENT = 20
MAX_SECONDS = 90.0
BODY = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "讲一个故事 and keep going"}],
    "max_tokens": 150,
    "ignore_eos": True,
    "temperature": 0,
    "stream": True,
}


@dataclass
class Outcome:
    sent: float
    ended: float
    ok: bool
    detail: str
    first_byte: float | None = None


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, tiny_chat_model_dir: Path) -> Iterator[Cluster]:
    logs = tmp_path_factory.mktemp("lb-logs")
    cluster = Cluster(logs, logs / "home", heartbeat_interval=1.0)
    try:
        cluster.start_controller()
        # Started with FastChat's model_worker flags, as a migrating user would.
        port = free_port()
        fastchat_flags = [
            *("worker", "--model-path", str(tiny_chat_model_dir), "--model-names", MODEL),
            *("--controller-url", cluster.controller_url, "--worker-address", f"http://127.0.0.1:{port}"),
            *("--port", str(port), "--num-gpus", "1", "--max-batch-size", "16", "--heartbeat-interval", "1"),
        ]
        worker = Service("worker", fastchat_flags, logs, cluster.env).start()
        worker.port = port  # type: ignore[attr-defined]
        cluster.workers["worker"] = worker
        worker.wait_http(f"http://127.0.0.1:{port}/ready")
        yield cluster
    finally:
        cluster.stop()


def test_controller_port_points_openai_clients_at_the_gateways(backend: Cluster, tmp_path: Path) -> None:
    """FastChat's own check posts to the controller's port; the answer names the running gateways."""
    gateways = _gateways(backend, tmp_path)
    try:
        response = httpx.post(f"{backend.controller_url}/v1/chat/completions", json=BODY, timeout=10)
        assert response.status_code == 404
        message = response.json()["error"]["message"]
        for _, port in gateways:
            assert f"http://127.0.0.1:{port}/v1/chat/completions" in message
        # ...and the worker that registered under FastChat's flags serves through them.
        reply = httpx.post(f"http://127.0.0.1:{gateways[0][1]}/v1/chat/completions", json=BODY, timeout=60)
        assert reply.status_code == 200 and reply.text.rstrip().endswith("data: [DONE]")
        # The Helm chart's worker autoscaler reads a metric this worker really exports.
        metric = yaml.safe_load(HELM_VALUES.read_text())["autoscalingMetric"]
        port = backend.workers["worker"].port  # type: ignore[attr-defined]
        assert f"\n{metric}{{" in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        for service, _ in gateways:
            service.stop(timeout=10)


def _gateways(backend: Cluster, log_dir: Path) -> list[tuple[Service, int]]:
    started = []
    for name in ("gateway-1", "gateway-2"):
        port = free_port()
        args = ["gateway", "--port", str(port), "--controller", backend.controller_url]
        started.append((Service(name, args, log_dir, backend.env).start(), port))
    for service, port in started:
        service.wait_http(f"http://127.0.0.1:{port}/ready", timeout=60)
    # nginx acts on this header and does not pass it on, so it is checked at a gateway itself.
    with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=BODY, timeout=30) as response:
        assert response.headers["x-accel-buffering"] == "no"
    return started


def _proxy(kind: str, directory: Path, listen: int, gateway_ports: list[int]) -> proxies.Proxy:
    if kind == "nginx":
        site = directory / "tokenyard.conf"
        site.write_text(proxies.nginx_site(listen, gateway_ports))
        command = proxies.nginx_command(proxies.nginx_main(directory, site))
    else:
        config = directory / "haproxy.cfg"
        config.write_text(proxies.haproxy_config(listen, gateway_ports))
        command = [proxies.HAPROXY, "-db", "-f", str(config)]
    return proxies.Proxy(command, directory / f"{kind}.log").start(f"http://127.0.0.1:{listen}")


def _one_stream(client: httpx.Client, url: str, streaming: Callable[[int], None]) -> Outcome:
    sent = time.time()
    first: float | None = None
    lines: list[str] = []
    try:
        with client.stream("POST", f"{url}/v1/chat/completions", json=BODY) as response:
            if response.status_code != 200:
                response.read()
                return Outcome(sent, time.time(), False, f"status {response.status_code}: {response.text[:200]}")
            for line in response.iter_lines():
                if first is None:
                    first = time.time()
                    streaming(+1)
                if line:
                    lines.append(line)
    except httpx.HTTPError as exc:
        return Outcome(sent, time.time(), False, f"{type(exc).__name__}: {exc}", first)
    finally:
        if first is not None:
            streaming(-1)
    errors = [line for line in lines if line.startswith("data: {") and '"error"' in json.loads(line[6:])]
    ok = bool(lines) and lines[-1] == "data: [DONE]" and not errors
    return Outcome(sent, time.time(), ok, "ok" if ok else f"bad stream end: {(errors or lines[-1:])}", first)


class Load:
    """CLIENTS threads, each sending one streaming request after another through the proxy.

    Adaptive rather than timed (the shared machine's speed varies several-fold): `signal_when_busy`
    fires once every client has finished a first stream, so streams are in flight on both gateways;
    each client then sends AFTER_SIGNAL more requests and stops. Bounded in count and in time.
    The clients' streams start in step, so the signal waits until most of them are mid-body.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.outcomes: list[Outcome] = []
        self.lock = threading.Lock()
        self.signalled_at: float | None = None
        self.num_streaming = 0
        self.deadline = time.time() + MAX_SECONDS

    def _client_loop(self) -> None:
        after = 0
        with httpx.Client(timeout=httpx.Timeout(60, connect=5)) as client:
            for _ in range(MAX_PER_CLIENT):
                if after >= AFTER_SIGNAL or time.time() > self.deadline:
                    return
                after += self.signalled_at is not None
                outcome = _one_stream(client, self.url, self._streaming)
                with self.lock:
                    self.outcomes.append(outcome)

    def _streaming(self, change: int) -> None:
        with self.lock:
            self.num_streaming += change

    def _busy(self) -> bool:
        return len(self.outcomes) >= CLIENTS and self.num_streaming >= CLIENTS - 1

    def run(self, fire: Callable[[], None]) -> list[Outcome]:
        threads = [threading.Thread(target=self._client_loop) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        wait_until(self._busy, timeout=MAX_SECONDS / 2, interval=0.01)
        self.signalled_at = time.time()
        fire()
        for thread in threads:
            thread.join(timeout=MAX_SECONDS + 60)
        return self.outcomes


@dataclass
class Served:
    """One request as the proxy logged it: which gateway (1 or 2), when it began and ended, its status."""

    gateway: int
    began: float
    ended: float
    status: int


def _served(kind: str, directory: Path, ports: list[int]) -> list[Served]:
    rows = []
    if kind == "nginx":
        for line in (directory / "access.log").read_text().splitlines():
            msec, rest = line.split(" ", 1)
            upstream, status, seconds = rest.rsplit(" ", 2)
            last = upstream.split(",")[-1].strip()  # a retried request names every gateway it tried
            gateway = ports.index(int(last.rsplit(":", 1)[-1])) + 1 if ":" in last else 0
            rows.append(Served(gateway, float(msec) - float(seconds), float(msec), int(status)))
        return rows
    pattern = re.compile(r"\[(\S+)\] \S+ gateways/g(\d) -?\d+/-?\d+/-?\d+/-?\d+/(\d+) (\d+)")
    for match in pattern.finditer((directory / "haproxy.log").read_text()):
        began = datetime.strptime(match[1], "%d/%b/%Y:%H:%M:%S.%f").timestamp()
        rows.append(Served(int(match[2]), began, began + int(match[3]) / 1000, int(match[4])))
    return rows


def _run_case(kind: str, sig: signal.Signals, backend: Cluster, tmp_path: Path) -> dict[str, object]:
    binary = proxies.NGINX if kind == "nginx" else proxies.HAPROXY
    if not proxies.have(binary):
        pytest.skip(f"{binary} is not installed (scripts/test-deps.sh installs it)")
    gateways = _gateways(backend, tmp_path)
    listen = free_port()
    proxy = _proxy(kind, tmp_path, listen, [port for _, port in gateways])
    victim = gateways[0][0]
    try:
        load = Load(f"http://127.0.0.1:{listen}")
        outcomes = load.run(lambda: victim.signal(sig))
        assert load.signalled_at is not None
        signalled = load.signalled_at
        assert wait_until(lambda: not victim.alive(), timeout=35), victim.logs()
        exit_code = victim.wait(1)
    finally:
        proxy.stop()
        for service, _ in gateways:
            service.stop(timeout=10)
    served = _served(kind, tmp_path, [port for _, port in gateways])
    return {
        "outcomes": outcomes,
        "signalled": signalled,
        "exit_code": exit_code,
        "served": served,
        "logs": backend.logs() + "\n".join(s.logs() for s, _ in gateways) + proxy.logs(),
    }


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_sigterm_drains_a_gateway_and_no_client_sees_a_failure(kind: str, backend: Cluster, tmp_path: Path) -> None:
    run = _run_case(kind, signal.SIGTERM, backend, tmp_path)
    outcomes: list[Outcome] = run["outcomes"]  # type: ignore[assignment]
    failures = [o.detail for o in outcomes if not o.ok]
    assert not failures, f"{failures}\n{run['logs']}"
    assert run["exit_code"] in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
    signalled = float(run["signalled"])  # type: ignore[arg-type]
    # The drain was exercised: the stopped gateway was serving streams when SIGTERM came, and they
    # finished normally after it; load went on through the other gateway.
    served: list[Served] = run["served"]  # type: ignore[assignment]
    drained = [s for s in served if s.gateway == 1 and s.began < signalled < s.ended]
    assert drained and all(s.status == 200 for s in drained), served
    assert sum(o.sent > signalled for o in outcomes) >= CLIENTS
    print(f"\n{kind} SIGTERM: {len(outcomes)} streams, 0 failed, {len(drained)} drained in flight")


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_sigkill_cuts_streams_in_flight_and_later_requests_go_to_the_other_gateway(
    kind: str, backend: Cluster, tmp_path: Path
) -> None:
    run = _run_case(kind, signal.SIGKILL, backend, tmp_path)
    outcomes: list[Outcome] = run["outcomes"]  # type: ignore[assignment]
    signalled = float(run["signalled"])  # type: ignore[arg-type]
    later = [o for o in outcomes if o.sent > signalled + 0.05]
    cut = [o for o in outcomes if not o.ok]
    assert later and all(o.ok for o in later), [o.detail for o in later if not o.ok]
    # Only streams that were already running when the gateway died can have failed.
    assert all(o.sent <= signalled + 0.05 and o.ended >= signalled for o in cut), [
        (o.sent - signalled, o.ended - signalled, o.detail) for o in cut
    ]
    streaming = [o for o in outcomes if o.first_byte is not None and o.sent <= o.first_byte <= signalled < o.ended]
    served: list[Served] = run["served"]  # type: ignore[assignment]
    on_victim = [s for s in served if s.gateway == 1 and s.began < signalled < s.ended]
    # Measured, not asserted (docs/deploy.md has the figures): streams that had begun on the killed
    # gateway end without [DONE] (the proxy closes the client's connection mid-body).
    print(
        f"\n{kind} SIGKILL: {len(outcomes)} streams; at the kill {len(streaming)} were streaming "
        f"({len(on_victim)} through the killed gateway per the proxy log); {len(cut)} cut "
        f"{sorted({o.detail.split(':')[0] for o in cut})}; {len(later)} sent later, all ok"
    )
