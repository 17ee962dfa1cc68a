"""`tokenyard status`: the controller's view of the workers, once or live (`--watch`).

Rows come from the controller's /workers; the live table adds each worker's KV-cache usage from its
own /stats (the controller does not carry it), shown as "-" when a worker cannot be asked.
"""

from __future__ import annotations

import time
from typing import Any

import click
import httpx

from tokenyard.protocol.internal import WorkerInfo, WorkerList

COLUMNS = "{id:<24} {models:<26} {state:<9} {queue:>5} {batch:>5} {tps:>7} {kv:>5}  {reason}"


def fetch_workers(client: httpx.Client, controller: str) -> list[WorkerInfo]:
    try:
        response = client.get(f"{controller}/workers", timeout=5)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the controller at {controller}: {exc}") from None
    return WorkerList.model_validate_json(response.content).workers


def rows(workers: list[WorkerInfo]) -> list[dict[str, Any]]:
    """The JSON shape of `tokenyard status --format json`."""
    return [
        {
            "id": w.worker_id,
            "address": w.address,
            "models": w.models,
            "kind": w.kind.value if w.kind else None,
            "state": w.state.value,
            "reason": w.reason,
            "queue_length": w.queue_length,
            "num_running": w.num_running,
            "speed": round(w.speed, 1),
            "last_heartbeat_age": round(w.last_heartbeat_age, 1),
        }
        for w in workers
    ]


def kv_usage(client: httpx.Client, worker: WorkerInfo) -> str:
    """The worker's KV-cache usage as a percentage, or "-"."""
    try:
        extra = client.get(f"{worker.address}/stats", timeout=1).json().get("extra", {})
        total = float(extra["kv_blocks_total"])
        return f"{100 * (1 - float(extra['kv_blocks_free']) / total):.0f}%" if total else "-"
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
        return "-"


def table(workers: list[WorkerInfo], kv: dict[str, str] | None = None) -> str:
    header = COLUMNS.format(
        id="ID", models="MODELS", state="STATE", queue="QUEUE", batch="BATCH", tps="TOK/S", kv="KV", reason="REASON"
    )
    lines = [header]
    for w in workers:
        lines.append(
            COLUMNS.format(
                id=w.worker_id,
                models=",".join(w.models),
                state=w.state.value,
                queue=w.queue_length,
                batch=w.num_running,
                tps=f"{w.speed:.1f}" if w.state.value == "healthy" else "-",
                kv=(kv or {}).get(w.worker_id, "-"),
                reason=w.reason,
            ).rstrip()
        )
    return "\n".join(lines)


def watch(client: httpx.Client, controller: str, interval: float = 1.0, rounds: int | None = None) -> None:
    """Redraw the table every `interval` seconds until Ctrl-C (or `rounds` redraws, for tests)."""
    done = 0
    while rounds is None or done < rounds:
        workers = fetch_workers(client, controller)
        kv = {w.worker_id: kv_usage(client, w) for w in workers if w.state.value != "evicted"}
        stamp = time.strftime("%H:%M:%S")
        click.clear()
        click.echo(f"tokenyard status  {controller}  {stamp}  (Ctrl-C stops)\n{table(workers, kv)}")
        done += 1
        if rounds is None or done < rounds:
            time.sleep(interval)
