"""Gateway requests per second with governance on (auth, quotas, usage records, conversation logs)
against the same gateway with all of it off: concurrency 16, `max_tokens: 1`.

One controller and one chat worker serve every gateway; the gateways run side by side on their own
ports: `off` (no auth, no metering), `sqlite` and `postgresql` (auth with a key, a quota on the
tenant that is never reached, so every call reserves and settles, usage records and conversation
logs through the journal). Rounds alternate between the gateways, so a noisy shared machine slows
each of them alike; the report gives each gateway's median over the rounds and the overhead.

    .venv/bin/python benchmarks/governance_overhead.py [--model PATH] [--rounds 5] [--requests 200]

Without --model it builds the tiny test model (tests/tiny_models.py): a fast engine makes the
gateway's own cost as visible as it can be. Results go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import yaml
from benchmarks.servers import cpu_seconds
from sqlalchemy import create_engine, text
from tests.integration.processes import Cluster, Service, free_port, wait_until
from tests.tiny_models import make_tiny_chat_model

from tokenyard.governance.keys import KeySettings, create_key
from tokenyard.governance.quota_admin import QuotaChange, set_quota
from tokenyard.store import Store

POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BODY = {"model": "bench", "messages": [{"role": "user", "content": "Hello! 你好"}], "max_tokens": 1}


def governed_store(url: str) -> str:
    """Migrate, add a tenant with a key and a quota it never reaches; return the key."""
    store = Store(url)
    store.upgrade()
    key = create_key(store, KeySettings(tenant="bench")).key
    set_quota(store, "tenant", "bench", QuotaChange(calls=10**9, period="day"))
    store.close()
    return key


def start_gateway(cluster: Cluster, name: str, config: dict[str, object]) -> str:
    port = free_port()
    path = cluster.log_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    args = ["gateway", "--port", str(port), "--controller", cluster.controller_url, "--config", str(path)]
    service = Service(name, args, cluster.log_dir, cluster.env).start()
    service.wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
    cluster.workers[name] = service  # stopped with the cluster
    return f"http://127.0.0.1:{port}"


def models_ready(url: str, key: str | None) -> bool:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(f"{url}/v1/models", headers=headers, timeout=5)
    return response.status_code == 200 and bool(response.json()["data"])


async def rate(url: str, key: str | None, requests: int, concurrency: int) -> float:
    """Requests per second for `requests` calls, `concurrency` at a time; every one must succeed."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    queue = iter(range(requests))
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:

        async def lane() -> None:
            for _ in queue:
                response = await client.post("/v1/chat/completions", json=BODY)
                response.raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        return requests / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="chat model folder (default: the tiny test model)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ty-gov-bench-"))
    model = args.model or str(make_tiny_chat_model(work / "model"))
    database = f"ty_bench_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {database}"))
    cluster = Cluster(work, work / "home")
    try:
        cluster.start_controller()
        cluster.start_worker("chat", model, "--model-name", "bench", "--max-batch-size", "16")
        sqlite_url = f"sqlite:///{work / 'store.db'}"
        postgres_url = POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{database}"
        governed = {"auth": {"enabled": True}, "logs": {"enabled": True}}
        keys = {"sqlite": governed_store(sqlite_url), "postgresql": governed_store(postgres_url)}
        targets = {
            "off": (start_gateway(cluster, "off", {}), None),
            "sqlite": (start_gateway(cluster, "sqlite", governed | {"database": {"url": sqlite_url}}), keys["sqlite"]),
            "postgresql": (
                start_gateway(cluster, "postgresql", governed | {"database": {"url": postgres_url}}),
                keys["postgresql"],
            ),
        }
        for url, key in targets.values():  # warm-up: routes, key caches, connection pools
            assert wait_until(lambda u=url, k=key: models_ready(u, k), 60), cluster.logs()
            asyncio.run(rate(url, key, 32, args.concurrency))
        results: dict[str, list[float]] = {name: [] for name in targets}
        cpu: dict[str, list[float]] = {name: [] for name in targets}  # gateway CPU ms per request
        for round_number in range(args.rounds):
            for name, (url, key) in targets.items():
                pid = cluster.workers[name].process.pid  # type: ignore[union-attr]
                before = cpu_seconds(pid)
                results[name].append(asyncio.run(rate(url, key, args.requests, args.concurrency)))
                cpu[name].append(1000 * (cpu_seconds(pid) - before) / args.requests)
            print(f"round {round_number + 1}: " + "  ".join(f"{n} {r[-1]:.1f}" for n, r in results.items()), flush=True)
        base = statistics.median(results["off"])
        print(f"\nconcurrency {args.concurrency}, max_tokens 1, {args.requests} requests x {args.rounds} rounds")
        base_cpu = statistics.median(cpu["off"])
        for name, rates in results.items():
            median, per_call = statistics.median(rates), statistics.median(cpu[name])
            print(
                f"{name:<11} median {median:6.1f} req/s (overhead {100 * (1 - median / base):5.1f}%)  "
                f"gateway CPU {per_call:5.2f} ms/request (+{per_call - base_cpu:4.2f})  "
                f"rounds {[round(r, 1) for r in rates]}"
            )
    finally:
        cluster.stop()
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        admin.dispose()


if __name__ == "__main__":
    main()
