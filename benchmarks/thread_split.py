"""Decode-step time under three ways of using the CPU threads, side by side in one process.

    .venv/bin/python benchmarks/thread_split.py [--batch 1,16,64] [--quantization int4] [--home ~/.tokenyard]

`split` is what the engine does (engine/modeling/threads.py: one thread, the linear layers of large
steps on all of them); `one` runs everything on one thread; `all` everything on every thread. The
modes take turns, five rounds of four steps each, and the best round of each is printed in ms.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from step_profile import decode_plan  # benchmarks/ is on the path when run as a script
from transformers import AutoConfig

from tokenyard.engine.loader import configure_torch_threads
from tokenyard.engine.model_runner import LlamaRunner
from tokenyard.engine.modeling.threads import ThreadBudget
from tokenyard.models import resolve_model


def modes(budget: ThreadBudget) -> dict[str, Callable[[int], None]]:
    split = budget.start_step

    def fixed(threads: int) -> Callable[[int], None]:
        def start_step(tokens: int) -> None:
            torch.set_num_threads(threads)
            budget.matmul_threads = 1  # the linears keep the thread count set here

        return start_step

    return {"split": split, "one": fixed(1), "all": fixed(budget.max_threads)}


def measure(runner: LlamaRunner, batches: list[int]) -> None:
    assert runner.threads is not None
    choices = modes(runner.threads)
    with torch.inference_mode():
        for batch in batches:
            plan = decode_plan(runner, batch, 160)
            best = {name: float("inf") for name in choices}
            for _ in range(5):
                for name, start_step in choices.items():
                    runner.threads.start_step = start_step  # type: ignore[method-assign]
                    runner.run(plan)
                    started = time.perf_counter()
                    for _ in range(4):
                        runner.run(plan)
                    best[name] = min(best[name], (time.perf_counter() - started) / 4 * 1000)
            print(f"batch {batch}: " + ", ".join(f"{name} {ms:.1f} ms" for name, ms in best.items()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--home", default="~/.tokenyard")
    parser.add_argument("--batch", default="1,16,64")
    parser.add_argument("--quantization", default="int4", choices=["none", "int8", "int4"])
    args = parser.parse_args()
    configure_torch_threads()
    batches = [int(b) for b in args.batch.split(",")]
    folder = resolve_model(args.model, Path(args.home).expanduser()).path
    runner = LlamaRunner.load(
        folder,
        AutoConfig.from_pretrained(folder),
        device=torch.device("cpu"),
        dtype=torch.bfloat16,
        quantization=args.quantization,
        kv_cache_bytes=lambda per_token: per_token * 200 * max(batches) * 2,
        max_positions=8192,
    )
    worker = threading.Thread(target=measure, args=(runner, batches))  # a worker thread, as in the engine
    worker.start()
    worker.join()


if __name__ == "__main__":
    main()
