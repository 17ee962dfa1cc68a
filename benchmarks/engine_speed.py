"""Engine throughput without HTTP: N concurrent streaming requests straight into BatchingGenerationEngine.

    .venv/bin/python benchmarks/engine_speed.py --concurrency 1 16 64 --max-tokens 128 [--dtype bfloat16]
        [--quantization int8] [--model smollm2-135m-instruct] [--threads N]
        [--device cuda [--enforce-eager] --rounds 2]

Each concurrency level runs `concurrency` chat requests at once (distinct prompts, greedy, EOS ignored,
so every request produces exactly --max-tokens tokens) after one warm-up request, and prints output
tokens per second over the whole run, and time to first token p50. With --rounds N each level runs
N times and the last round is reported (on CUDA the first round captures the decode graphs each
batch size needs). For where a step's time goes, see benchmarks/step_profile.py.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import torch

from tokenyard.config import WorkerConfig
from tokenyard.engine.base import SamplingParams
from tokenyard.engine.engine import BatchingGenerationEngine
from tokenyard.engine.loader import load_engine
from tokenyard.models import resolve_model
from tokenyard.protocol.internal import ChatMessage

TOPICS = ["the sea", "mountains", "a city at night", "autumn", "robots", "coffee", "trains", "the moon"]


async def one_request(engine: BatchingGenerationEngine, index: int, max_tokens: int) -> tuple[float, int]:
    """Returns (seconds to first token, tokens) for one streamed request."""
    topic = TOPICS[index % len(TOPICS)]
    messages = [ChatMessage(role="user", content=f"Write a long story about {topic}, number {index}.")]
    prompt = engine.tokenizer.encode_chat(messages)
    params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
    started, first, tokens = time.perf_counter(), 0.0, 0
    async for output in engine.generate(f"bench-{index}-{time.monotonic_ns()}", prompt, params):
        if tokens == 0:
            first = time.perf_counter() - started
        tokens += output.num_new_tokens
    return first, tokens


async def run_level(engine: BatchingGenerationEngine, concurrency: int, max_tokens: int) -> tuple[float, float]:
    started = time.perf_counter()
    results = await asyncio.gather(*(one_request(engine, i, max_tokens) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    return sum(tokens for _, tokens in results) / elapsed, statistics.median(first for first, _ in results)


async def main(args: argparse.Namespace) -> None:
    resolved = resolve_model(args.model, Path(args.home).expanduser())
    config = WorkerConfig(
        device=args.device,
        dtype=args.dtype,
        quantization=args.quantization,
        max_batch_size=max(args.concurrency),
        batch_wait_timeout=args.batch_wait_timeout,
        kv_cache_memory=1.0,
        enforce_eager=args.enforce_eager,
    )
    engine = load_engine(resolved, config)
    if args.threads:
        torch.set_num_threads(args.threads)  # after load_engine, which sets it to the usable CPU count
    assert isinstance(engine, BatchingGenerationEngine)
    await engine.start()
    try:
        await one_request(engine, 999, 16)  # warm-up: first-call allocations and kernel selection
        mode = f"{args.device}, {args.dtype}, quantization {args.quantization}, {torch.get_num_threads()} threads"
        if args.device != "cpu":
            mode += ", eager" if args.enforce_eager else ", decode graphs"
        print(f"| concurrency | output tok/s | TTFT p50 (ms) |   ({mode})")
        print("| --- | --- | --- |")
        for concurrency in args.concurrency:
            for _ in range(args.rounds):
                rate, ttft = await run_level(engine, concurrency, args.max_tokens)
            print(f"| {concurrency} | {rate:.1f} | {ttft * 1000:.0f} |", flush=True)
    finally:
        await engine.shutdown()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--home", default="~/.tokenyard", help="where converted models are kept")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--quantization", default="auto", choices=["auto", "none", "int8", "int4"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--batch-wait-timeout", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: one per usable CPU")
    parser.add_argument("--enforce-eager", action="store_true", help="CUDA: decode without CUDA graphs")
    parser.add_argument("--rounds", type=int, default=1, help="runs per level; the last one is reported")
    return parser.parse_args()


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    asyncio.run(main(parse_args()))
