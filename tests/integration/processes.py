"""Real tokenyard processes on free loopback ports, for integration tests.

Each service runs `python -m tokenyard ...` exactly as a user would start it; its output goes to
a log file that a failing test prints.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Service:
    def __init__(
        self, name: str, args: list[str], log_dir: Path, env: dict[str, str], prefix: list[str] | None = None
    ) -> None:
        self.name = name
        self.args = args
        self.prefix = prefix or []  # e.g. `ip netns exec HOST` to run it on another test host
        self.log_path = log_dir / f"{name}.log"
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "tokenyard", *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        log.close()
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_http(self, url: str, timeout: float = 120.0) -> None:
        """Wait until `url` answers 200; fail with the service's log if it dies or times out."""

        def up() -> bool:
            if not self.alive():
                raise AssertionError(f"{self.name} exited early:\n{self.logs()}")
            try:
                return httpx.get(url, timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        if not wait_until(up, timeout, interval=0.2):
            raise AssertionError(f"{self.name} not ready at {url} after {timeout}s:\n{self.logs()}")

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""


def service_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENYARD_")}
    env.update(TOKENYARD_HOME=str(home), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


class Cluster:
    """A controller, any number of workers and a gateway, each its own process."""

    def __init__(self, log_dir: Path, home: Path, heartbeat_interval: float = 0.5) -> None:
        self.log_dir = log_dir
        self.env = service_env(home)
        self.heartbeat_interval = heartbeat_interval
        self.controller_port = free_port()
        self.controller_url = f"http://127.0.0.1:{self.controller_port}"
        self.controller: Service | None = None
        self.controller_started = 0.0
        self.workers: dict[str, Service] = {}
        self.gateway: Service | None = None
        self.gateway_url = ""

    def start_controller(self) -> Service:
        self.controller_started = time.monotonic()
        self.controller = Service(
            "controller", ["controller", "--port", str(self.controller_port)], self.log_dir, self.env
        ).start()
        self.controller.wait_http(f"{self.controller_url}/health")
        return self.controller

    def wait_past_startup_grace(self, grace: float = 5.0) -> None:
        time.sleep(max(0.0, self.controller_started + grace - time.monotonic()))

    def start_worker(
        self, name: str, model: str, *extra: str, wait: bool = True, env: dict[str, str] | None = None
    ) -> Service:
        port = free_port()
        args = [
            "worker",
            "--model",
            model,
            "--port",
            str(port),
            "--controller",
            self.controller_url,
            "--heartbeat-interval",
            str(self.heartbeat_interval),
            *extra,
        ]
        worker = Service(name, args, self.log_dir, env or self.env).start()
        worker.port = port  # type: ignore[attr-defined]
        self.workers[name] = worker
        if wait:
            worker.wait_http(f"http://127.0.0.1:{port}/ready")
        return worker

    def start_gateway(self) -> Service:
        port = free_port()
        self.gateway_url = f"http://127.0.0.1:{port}"
        self.gateway = Service(
            "gateway", ["gateway", "--port", str(port), "--controller", self.controller_url], self.log_dir, self.env
        ).start()
        self.gateway.wait_http(f"{self.gateway_url}/health")
        return self.gateway

    def model_ids(self) -> list[str]:
        response = httpx.get(f"{self.gateway_url}/v1/models", timeout=5)
        return [m["id"] for m in response.json()["data"]]

    def registered_worker_ids(self) -> list[str]:
        response = httpx.get(f"{self.controller_url}/workers", timeout=5)
        return [w["worker_id"] for w in response.json()["workers"] if w["state"] == "healthy"]

    def stop(self) -> None:
        services = [self.gateway, *self.workers.values(), self.controller]
        for service in services:
            if service is not None:
                service.stop()

    def logs(self) -> str:
        services = [self.controller, *self.workers.values(), self.gateway]
        return "\n".join(f"--- {s.name} ---\n{s.logs()}" for s in services if s is not None)
