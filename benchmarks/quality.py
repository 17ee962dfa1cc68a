"""Precision and quantisation: memory, greedy agreement with float32, and perplexity, per engine mode.

    .venv/bin/python benchmarks/quality.py [--model smollm2-135m-instruct] [--home ~/.tokenyard]

For each mode (float32; bfloat16; int8 and int4 weight-only with bfloat16 activations) it loads the
engine's own llama model and reports: the bytes its weights take in memory (quantised layers keep their
dense weights too, for large batches: see engine/modeling/quant.py); greedy-token agreement with float32
over a fixed set of chat prompts (per prompt, the share of the 32 greedy tokens up to the first one that
differs, averaged: 1.0 means identical continuations); and perplexity on a fixed English text. Prints a
markdown table (it goes into docs/engine.md).
"""

from __future__ import annotations

import argparse
import math
import threading
from pathlib import Path

import torch

from tokenyard.engine.base import SamplingParams
from tokenyard.engine.kv_cache import BlockManager
from tokenyard.engine.loader import configure_torch_threads
from tokenyard.engine.model_runner import BLOCK_SIZE, LlamaRunner
from tokenyard.engine.modeling import quant
from tokenyard.engine.modeling.attention import AttentionMetadata, PrefillChunk
from tokenyard.engine.scheduler import ScheduledChunk, SchedulerPlan
from tokenyard.engine.sequence import Sequence
from tokenyard.engine.tokenizer import HFPromptTokenizer
from tokenyard.models import resolve_model
from tokenyard.protocol.internal import ChatMessage

MODES = [("float32", torch.float32, "none"), ("bfloat16", torch.bfloat16, "none")]
MODES += [("int8 (bf16 act.)", torch.bfloat16, "int8"), ("int4 (bf16 act.)", torch.bfloat16, "int4")]
PROMPTS = [
    "What is the capital of France?",
    "Explain photosynthesis in one paragraph.",
    "Write a haiku about the sea.",
    "List three uses of a paperclip.",
    "What is 12 times 7?",
    "Give me a tip for learning a new language.",
    "Who wrote Romeo and Juliet?",
    "Describe a cat to someone who has never seen one.",
]
# Lewis Carroll, Alice's Adventures in Wonderland (1865), chapter 1: public domain.
TEXT = (
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do: "
    "once or twice she had peeped into the book her sister was reading, but it had no pictures or conversations "
    "in it, 'and what is the use of a book,' thought Alice 'without pictures or conversations?' So she was "
    "considering in her own mind (as well as she could, for the hot day made her feel very sleepy and stupid), "
    "whether the pleasure of making a daisy-chain would be worth the trouble of getting up and picking the "
    "daisies, when suddenly a White Rabbit with pink eyes ran close by her. There was nothing so very remarkable "
    "in that; nor did Alice think it so very much out of the way to hear the Rabbit say to itself, 'Oh dear! "
    "Oh dear! I shall be late!' (when she thought it over afterwards, it occurred to her that she ought to have "
    "wondered at this, but at the time it all seemed quite natural); but when the Rabbit actually took a watch "
    "out of its waistcoat-pocket, and looked at it, and then hurried on, Alice started to her feet."
)
NEW_TOKENS = 32


def load(folder: Path, dtype: torch.dtype, quantization: str) -> LlamaRunner:
    from transformers import AutoConfig

    return LlamaRunner.load(
        folder,
        AutoConfig.from_pretrained(folder),
        device=torch.device("cpu"),
        dtype=dtype,
        quantization=quantization,
        kv_cache_bytes=lambda per_token: 64 << 20,
        max_positions=2048,
    )


def weight_bytes(runner: LlamaRunner) -> int:
    tensors = [*runner.model.parameters(), *runner.model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors if t is not runner.model.rope)


def greedy(runner: LlamaRunner, prompt: list[int]) -> list[int]:
    """Greedy continuation through the runner: one prefill, then decode steps."""
    seq = Sequence(
        "q",
        prompt,
        SamplingParams(max_tokens=NEW_TOKENS, temperature=0),
        decode=lambda ids: "",
        eos_token_ids=(),
        context_length=4096,
    )
    manager = BlockManager(runner.num_blocks, BLOCK_SIZE)
    manager.allocate(seq, len(prompt) + NEW_TOKENS)
    start, count = 0, len(prompt)
    for _ in range(NEW_TOKENS):
        logits = runner.run(SchedulerPlan(chunks=[ScheduledChunk(seq, start, count, sample=True)])).logits
        seq.output_token_ids.append(int(logits[0].argmax()))
        start, count = seq.num_tokens - 1, 1
    return seq.output_token_ids


def perplexity(runner: LlamaRunner, ids: list[int]) -> float:
    """exp(mean negative log-likelihood) of `ids`, one causal pass from the start of the cache.

    The pass has many rows, where quantised layers would switch to their dense weights: the switch is
    lifted here so that the figure measures the quantised kernels that decode with.
    """
    layers = [m for m in runner.model.modules() if isinstance(m, quant.QuantisedLinear)]
    saved = [layer.max_rows for layer in layers]
    for layer in layers:
        layer.max_rows = len(ids)
    try:
        return _perplexity(runner, ids)
    finally:
        for layer, rows in zip(layers, saved, strict=True):
            layer.max_rows = rows


def _perplexity(runner: LlamaRunner, ids: list[int]) -> float:
    count = len(ids)
    slots = torch.arange(count)  # blocks 0.. of an otherwise unused cache
    meta = AttentionMetadata(slot_mapping=slots, prefills=[PrefillChunk(0, count, slots, None)])
    hidden = runner.model(torch.tensor(ids), torch.arange(count), runner.attention.bind(meta))  # [T, hidden]
    logits = runner.model.compute_logits(hidden[:-1])  # [T-1, V]
    nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]))
    return math.exp(float(nll))


def agreement(reference: list[int], other: list[int]) -> float:
    same = next((i for i, (a, b) in enumerate(zip(reference, other, strict=True)) if a != b), len(reference))
    return same / len(reference)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--home", default="~/.tokenyard")
    args = parser.parse_args()
    configure_torch_threads()
    folder = resolve_model(args.model, Path(args.home).expanduser()).path
    tokenizer = HFPromptTokenizer.from_folder(folder)
    prompts = [tokenizer.encode_chat([ChatMessage(role="user", content=p)]) for p in PROMPTS]
    text = tokenizer.encode_text(TEXT)
    reference: list[list[int]] = []
    print("| mode | weights (MiB) | greedy agreement with float32 | identical continuations | perplexity |")
    print("| --- | --- | --- | --- | --- |")
    with torch.inference_mode():
        for name, dtype, quantization in MODES:
            runner = load(folder, dtype, quantization)
            outputs = [greedy(runner, prompt) for prompt in prompts]
            reference = reference or outputs
            scores = [agreement(ref, out) for ref, out in zip(reference, outputs, strict=True)]
            identical = sum(score == 1.0 for score in scores)
            print(
                f"| {name} | {weight_bytes(runner) / 2**20:.0f} | {sum(scores) / len(scores):.2f} | "
                f"{identical}/{len(scores)} | {perplexity(runner, text):.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    # In a worker thread, as in the engine: on this 2-core machine under load, torch's OpenMP team in the
    # main thread was measured ~70x slower on batch-1 matmuls (7.8 ms against 0.11 ms) than in a new thread.
    worker = threading.Thread(target=main)
    worker.start()
    worker.join()
