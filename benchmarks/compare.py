"""tokenyard against llama.cpp's llama-server and a FastChat-style baseline: one run, one machine, one table.

All three serve SmolLM2-135M-Instruct from the same GGUF file (llama-server reads it directly, tokenyard
and the baseline dequantise it) and are loaded by `tokenyard bench` with the same prompts, 128 output
tokens and `ignore_eos`, so every request costs the same work everywhere. Servers run strictly one at
a time, so each has both cores to itself; llama-server is restarted per level with `-np` equal to the
concurrency, as issue 3 asks. The ratios are the ones issue 3's target table names. See
docs/benchmarks.md for what each column means.

    .venv/bin/python benchmarks/compare.py            # concurrency 1, 16, 64 (about half an hour)
    .venv/bin/python benchmarks/compare.py --quick    # concurrency 1 and 16, few requests (a smoke run)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from compare_report import render_ratios, render_results, tokenyard_ratios
from llama_build import DEFAULT_CACHE, build
from servers import MODEL_ALIAS, Server, baseline_server, llama_server, running, smollm2_gguf, tokenyard_server

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("tokenyard", "llama-server", "baseline")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Smoke run: concurrency 1,16 and few requests.")
    parser.add_argument("--concurrency", help="Comma-separated levels (default 1,16,64; --quick: 1,16).")
    parser.add_argument("--requests-waves", type=int, help="Requests per level = waves x concurrency (default 2).")
    parser.add_argument("--min-requests", type=int, help="At least this many requests per level (default 16).")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2, help="Unmeasured requests before each level.")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="Which of %(default)s to run, in order.")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="llama-server -t and -tb.")
    parser.add_argument("--llama-server", type=Path, help="An existing llama-server binary (default: build one).")
    parser.add_argument("--llama-cache", type=Path, default=DEFAULT_CACHE, help="Where llama-server is built.")
    parser.add_argument(
        "--home",
        type=Path,
        default=Path(os.environ.get("TOKENYARD_HOME", "~/.tokenyard")),
        help="tokenyard data folder holding the converted model (default: TOKENYARD_HOME).",
    )
    parser.add_argument(
        "--quantization",
        choices=["auto", "none", "int8", "int4"],
        help="tokenyard's --quantization (default: none passed; auto runs the file's Q4_1 weights as int4).",
    )
    parser.add_argument("--max-batch-size", type=int, help="tokenyard's --max-batch-size (default: none passed).")
    parser.add_argument("--worker-arg", action="append", default=[], help="Extra flag for `tokenyard worker`.")
    parser.add_argument("--output", type=Path, help="Result JSON (default: .cache/compare/compare-<time>.json).")
    return parser.parse_args()


def plan_levels(args: argparse.Namespace) -> list[tuple[int, int]]:
    """(concurrency, requests) per level: enough waves that most requests run at full concurrency."""
    levels = [int(c) for c in (args.concurrency or ("1,16" if args.quick else "1,16,64")).split(",")]
    waves = args.requests_waves or (1 if args.quick else 2)
    minimum = args.min_requests or (4 if args.quick else 16)
    return [(c, max(minimum, waves * c)) for c in levels]


def bench_command(url: str, concurrency: int, requests: int, args: argparse.Namespace) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tokenyard",
        "bench",
        "--url",
        url,
        "--model",
        MODEL_ALIAS,
        "--concurrency",
        str(concurrency),
        "--requests",
        str(requests),
        "--max-tokens",
        str(args.max_tokens),
        "--ignore-eos",
        "--warmup",
        str(args.warmup),
        "--format",
        "json",
    ]


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def bench_level(server: Server, concurrency: int, requests: int, args: argparse.Namespace) -> dict[str, Any]:
    """One `tokenyard bench` run; its level report, plus the command and the load average around it."""
    command = bench_command(server.url, concurrency, requests, args)
    print(f"  {server.name}: concurrency {concurrency}, {requests} requests", file=sys.stderr, flush=True)
    load_before = os.getloadavg()[0]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    context = {
        "command": " ".join(command),
        "loadavg_1m_before": load_before,
        "loadavg_1m_after": os.getloadavg()[0],
        "rss_mib_after": [_rss_mib(process.pid) for process in server.processes],  # per command, in order
    }
    if not done.stdout.strip():  # bench could not run at all: its one-line error is on stderr
        return {"concurrency": concurrency, "failed": done.stderr.strip()[-500:], **context}
    level: dict[str, Any] = json.loads(done.stdout)["levels"][0]
    return {**level, **context}


def run_system(name: str, levels: list[tuple[int, int]], args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """Bench one system at every level; llama-server gets a fresh server per level (its -np is fixed at start)."""
    results: dict[str, Any] = {"levels": {}, "servers": {}}
    if name == "llama-server":
        binary = args.llama_server or build(args.llama_cache, jobs=args.threads)
        for concurrency, requests in levels:
            server = llama_server(log_dir, binary, smollm2_gguf(), concurrency, args.threads)
            with running(server):
                results["levels"][str(concurrency)] = bench_level(server, concurrency, requests, args)
            results["servers"][str(concurrency)] = server.command_lines()
        return results
    if name == "tokenyard":  # plain defaults unless asked: what `make serve` runs
        flags = ["--quantization", args.quantization] if args.quantization else []
        flags += ["--max-batch-size", str(args.max_batch_size)] if args.max_batch_size else []
        server = tokenyard_server(log_dir, args.home.expanduser(), flags + args.worker_arg)
    else:
        server = baseline_server(log_dir, args.home.expanduser())
    with running(server):
        for concurrency, requests in levels:
            results["levels"][str(concurrency)] = bench_level(server, concurrency, requests, args)
    results["servers"]["all"] = server.command_lines()
    return results


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "loadavg": os.getloadavg()}


def main() -> None:
    args = parse_args()
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"--systems: unknown {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    levels = plan_levels(args)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    output = args.output or ROOT / ".cache" / "compare" / f"compare-{stamp}.json"
    log_dir = output.parent / f"logs-{stamp}"
    report: dict[str, Any] = {
        "started_utc": stamp,
        "machine": machine(),
        "levels": levels,
        "max_tokens": args.max_tokens,
        "quick": args.quick,
        "systems": {},
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    for name in systems:
        print(f"{name} ...", file=sys.stderr, flush=True)
        report["systems"][name] = run_system(name, levels, args, log_dir)
        report["ratios"] = tokenyard_ratios(report["systems"])
        report["machine"]["loadavg_end"] = os.getloadavg()
        # Written after every system, so a run stopped half-way still leaves its figures behind.
        output.write_text(json.dumps(report, indent=2))
    print(render_results(report["systems"]))
    print()
    print(render_ratios(report["ratios"]))
    print(f"\nresults: {output}\nserver logs: {log_dir}")


if __name__ == "__main__":
    main()
