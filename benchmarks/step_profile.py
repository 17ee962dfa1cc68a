"""Where one decode step's time goes: torch.profiler over the runner's forward at a given batch size.

    .venv/bin/python benchmarks/step_profile.py [--batch 1] [--context 160] [--dtype bfloat16] [--quantization none]

Builds `--batch` sequences of `--context` tokens already in the KV cache and times decode steps of
the engine's own model code (no scheduler, no sampling), in a worker thread as the engine runs it,
then prints milliseconds per step and the operators that took the most time.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import AutoConfig

from tokenyard.engine.base import SamplingParams
from tokenyard.engine.kv_cache import BlockManager
from tokenyard.engine.loader import configure_torch_threads
from tokenyard.engine.model_runner import BLOCK_SIZE, LlamaRunner
from tokenyard.engine.scheduler import ScheduledChunk, SchedulerPlan
from tokenyard.engine.sequence import Sequence
from tokenyard.models import resolve_model

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def decode_plan(runner: LlamaRunner, batch: int, context: int) -> SchedulerPlan:
    manager, chunks = BlockManager(runner.num_blocks, BLOCK_SIZE), []
    for i in range(batch):
        params = SamplingParams(max_tokens=8)
        seq = Sequence(
            str(i), list(range(100 + i, 100 + i + context)), params, decode=str, eos_token_ids=(), context_length=8192
        )
        seq.output_token_ids.append(5)
        manager.allocate(seq, context + 1)
        chunks.append(ScheduledChunk(seq, context, 1, sample=True))
    return SchedulerPlan(chunks=chunks)


def measure(runner: LlamaRunner, plan: SchedulerPlan, steps: int) -> None:
    with torch.inference_mode():
        for _ in range(3):
            runner.run(plan)
        started = time.perf_counter()
        for _ in range(steps):
            runner.run(plan)
        seconds = (time.perf_counter() - started) / steps
        print(f"{seconds * 1000:.1f} ms per step, {len(plan.chunks) / seconds:.0f} tokens/s", flush=True)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                runner.run(plan)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--home", default="~/.tokenyard")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--context", type=int, default=160)
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    parser.add_argument("--quantization", default="none", choices=["none", "int8", "int4"])
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    configure_torch_threads()
    folder = resolve_model(args.model, Path(args.home).expanduser()).path
    runner = LlamaRunner.load(
        folder,
        AutoConfig.from_pretrained(folder),
        device=torch.device("cpu"),
        dtype=DTYPES[args.dtype],
        quantization=args.quantization,
        kv_cache_bytes=lambda per_token: per_token * (args.context + 16) * args.batch * 2,
        max_positions=8192,
    )
    # A worker thread, as in the engine (see benchmarks/quality.py on the main thread's OpenMP team).
    worker = threading.Thread(target=measure, args=(runner, decode_plan(runner, args.batch, args.context), args.steps))
    worker.start()
    worker.join()


if __name__ == "__main__":
    main()
