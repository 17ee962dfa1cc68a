"""Soak test: a controller, two workers and a gateway under twice their capacity for a while.

Every request must either complete or be refused with 429 before its first token; worker memory
must stay flat after warm-up (RSS growth under 5 %); KV blocks must all be free again once idle.
Not part of CI (it runs for minutes). Usage:

    .venv/bin/python benchmarks/soak.py --minutes 10 --out soak.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.processes import Cluster, service_env, wait_until


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def kv_free(port: int) -> float:
    stats = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=10).json()
    return float(stats["extra"].get("kv_blocks_free", -1))


def client_loop(
    url: str, model: str, stop: threading.Event, outcomes: Counter[str], lock: threading.Lock, errors: list[str]
) -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Tell me about the sea."}],
        "max_tokens": 64,
        "stream": True,
    }
    with httpx.Client(timeout=300) as http:
        while not stop.is_set():
            try:
                with http.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
                    if response.status_code != 200:
                        outcome = str(response.status_code)
                        if outcome != "429" and len(errors) < 20:
                            errors.append(f"{outcome}: {response.read().decode(errors='replace')[:300]}")
                    else:
                        lines = [line for line in response.iter_lines() if line]
                        ok = lines[-1] == "data: [DONE]" and not any('"error"' in line for line in lines)
                        outcome = "completed" if ok else "broken"
                        if not ok and len(errors) < 20:
                            errors.append(f"broken: {lines[-2:]}")
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
                if len(errors) < 20:
                    errors.append(f"{outcome}: {exc}")
            with lock:
                outcomes[outcome] += 1
            if outcome == "429":
                time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=4, help="--max-batch-size of each worker")
    parser.add_argument("--queue", type=int, default=4, help="max_queue_length of each worker")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    capacity = 2 * (args.batch + args.queue)
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), Path.home() / ".tokenyard")
        cluster.env = service_env(Path.home() / ".tokenyard")
        cluster.env["TOKENYARD_WORKER__MAX_QUEUE_LENGTH"] = str(args.queue)
        try:
            cluster.start_controller()
            for name in ("w1", "w2"):
                cluster.start_worker(name, args.model, "--max-batch-size", str(args.batch))
            cluster.start_gateway()
            assert wait_until(lambda: len(cluster.registered_worker_ids()) == 2, 60)
            report = soak(cluster, args.model, 2 * capacity, args.minutes * 60)
        finally:
            cluster.stop()
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0 if report["passed"] else 1


def soak(cluster: Cluster, model: str, clients: int, seconds: float) -> dict[str, object]:
    workers = {name: service for name, service in cluster.workers.items()}
    ports = {name: service.port for name, service in workers.items()}  # type: ignore[attr-defined]
    kv_start = {name: kv_free(port) for name, port in ports.items()}
    outcomes: Counter[str] = Counter()
    errors: list[str] = []
    stop, lock = threading.Event(), threading.Lock()
    threads = [
        threading.Thread(target=client_loop, args=(cluster.gateway_url, model, stop, outcomes, lock, errors))
        for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    warm_up = min(60.0, seconds / 5)
    time.sleep(warm_up)
    rss_warm = {name: rss_mib(s.process.pid) for name, s in workers.items() if s.process}
    samples = []
    deadline = time.monotonic() + seconds - warm_up
    while time.monotonic() < deadline:
        time.sleep(10)
        samples.append({name: round(rss_mib(s.process.pid), 1) for name, s in workers.items() if s.process})
    stop.set()
    for thread in threads:
        thread.join(300)
    time.sleep(5)
    rss_end = {name: rss_mib(s.process.pid) for name, s in workers.items() if s.process}
    kv_end = {name: kv_free(port) for name, port in ports.items()}
    growth = {name: round(100 * (rss_end[name] - rss_warm[name]) / rss_warm[name], 2) for name in rss_warm}
    failures = {k: v for k, v in outcomes.items() if k not in ("completed", "429")}
    return {
        "clients": clients,
        "seconds": seconds,
        "outcomes": dict(outcomes),
        "first_errors": errors,
        "rss_mib_after_warm_up": rss_warm,
        "rss_mib_at_end": rss_end,
        "rss_growth_percent": growth,
        "rss_samples": samples,
        "kv_blocks_free_start": kv_start,
        "kv_blocks_free_end": kv_end,
        "passed": not failures and all(g < 5 for g in growth.values()) and kv_start == kv_end,
    }


if __name__ == "__main__":
    sys.exit(main())
