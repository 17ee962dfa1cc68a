"""`LlamaRunner.run(plan)`: sampled logits, and prompt logits for the chunks that ask, in one call."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.engine.test_llama import CONFIGS, make_seq, plan_of, runner_for, save_random_model
from tests.engine.test_native_decode import quantised_runner
from tokenyard.engine import native
from tokenyard.engine.base import SamplingParams
from tokenyard.engine.decode_paths import NativeDecode
from tokenyard.engine.kv_cache import BlockManager
from tokenyard.engine.model_runner import BLOCK_SIZE
from tokenyard.engine.modeling.native_decode import NativeDecoder
from tokenyard.engine.sequence import Sequence


def asking_seq(prompt: list[int]) -> Sequence:
    params = SamplingParams(max_tokens=4, prompt_logprobs=1)
    return Sequence("asks", prompt, params, decode=lambda ids: "", eos_token_ids=(), context_length=256)


def test_prompt_logits_come_back_with_the_step_for_the_chunks_that_ask(tmp_path: Path) -> None:
    reference = save_random_model(CONFIGS["llama-tied"], tmp_path)
    runner = runner_for(CONFIGS["llama-tied"], tmp_path)
    manager = BlockManager(runner.num_blocks, BLOCK_SIZE)
    prompt = [(5 * i + 2) % 97 for i in range(21)]
    asks, plain = asking_seq(prompt), make_seq([3, 1, 4, 1, 5])
    for seq in (asks, plain):
        manager.allocate(seq, seq.num_tokens + 1)
    with torch.inference_mode():
        expected = reference(input_ids=torch.tensor([prompt])).logits[0]  # [S, V]
        first = runner.run(plan_of((asks, 0, 12, False), (plain, 0, 5, True)))
        second = runner.run(plan_of((asks, 12, 9, True)))
    assert [(p.chunk.seq, p.first, p.logits.shape[0]) for p in first.prompt_logits] == [(asks, 0, 12)]
    assert [(p.chunk.seq, p.first, p.logits.shape[0]) for p in second.prompt_logits] == [(asks, 12, 9)]
    every = torch.cat([first.prompt_logits[0].logits, second.prompt_logits[0].logits])  # [21, V]
    torch.testing.assert_close(every, expected, atol=2e-4, rtol=1e-4)
    assert first.logits.shape == (1, 97)  # only the plain sequence was sampled in the first step
    torch.testing.assert_close(second.logits[0], expected[-1], atol=2e-4, rtol=1e-4)


def test_a_sequence_with_output_asks_no_more(tmp_path: Path) -> None:
    save_random_model(CONFIGS["llama-tied"], tmp_path)
    runner = runner_for(CONFIGS["llama-tied"], tmp_path)
    seq = asking_seq([7, 8, 9, 10])
    BlockManager(runner.num_blocks, BLOCK_SIZE).allocate(seq, 6)
    with torch.inference_mode():
        assert len(runner.run(plan_of((seq, 0, 4, True))).prompt_logits) == 1
        seq.output_token_ids.append(11)
        step = runner.run(plan_of((seq, 4, 1, True)))  # a decode: its prompt was scored already
    assert step.prompt_logits == [] and step.logits.shape == (1, 97)


@pytest.mark.skipif(native.unavailable_reason() is not None, reason="native kernels unavailable")
def test_a_step_that_asks_runs_the_forward_even_where_decode_is_native(tmp_path: Path) -> None:
    runner = quantised_runner("llama-tied", tmp_path, torch.float32, "int4")
    assert isinstance(runner.decode_path, NativeDecode)
    calls = []
    decoder = runner.decode_path.decoder
    original = decoder.__call__
    decoder.__class__ = type("Counting", (NativeDecoder,), {"__call__": lambda s, *a: calls.append(1) or original(*a)})
    seq = asking_seq([7, 8, 9, 10, 11])
    BlockManager(runner.num_blocks, BLOCK_SIZE).allocate(seq, 6)
    with torch.inference_mode():
        runner.run(plan_of((seq, 0, 4, False)))
        last = runner.run(plan_of((seq, 4, 1, True)))  # one token, like a decode, but it asks for its logits
    assert calls == []  # the native loop returns no per-position logits: the forward ran both steps
    assert [(p.first, p.logits.shape[0]) for p in last.prompt_logits] == [(4, 1)]
    torch.testing.assert_close(last.prompt_logits[0].logits[0], last.logits[0])
