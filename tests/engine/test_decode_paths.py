"""The decode path is chosen once per model, and each path declines the steps it cannot take."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.engine.test_decode_graphs import runner_with
from tests.engine.test_llama import CONFIGS, make_seq, plan_of, runner_for, save_random_model
from tests.engine.test_native_decode import quantised_runner
from tokenyard.engine import native
from tokenyard.engine.decode_paths import EagerDecode, GraphDecode, NativeDecode
from tokenyard.engine.kv_cache import BlockManager
from tokenyard.engine.model_runner import BLOCK_SIZE

needs_native = pytest.mark.skipif(native.unavailable_reason() is not None, reason="native kernels unavailable")


def test_a_model_without_native_layers_decodes_through_its_forward(tmp_path: Path) -> None:
    save_random_model(CONFIGS["llama-tied"], tmp_path)
    runner = runner_for(CONFIGS["llama-tied"], tmp_path)  # float32 dense: no native loop for it
    assert isinstance(runner.decode_path, EagerDecode) and runner.kernel_path == "torch"


def test_graphs_are_chosen_when_asked_and_decline_steps_with_a_prompt_chunk(tmp_path: Path) -> None:
    save_random_model(CONFIGS["llama-tied"], tmp_path)
    runner = runner_with(tmp_path, "eager")
    path = runner.decode_path
    assert isinstance(path, GraphDecode) and runner.kernel_path == "torch"  # "cuda-graphs" only when captured
    seqs = [make_seq([1, 2, 3]), make_seq([4, 5, 6, 7])]
    manager = BlockManager(runner.num_blocks, BLOCK_SIZE)
    for seq in seqs:
        manager.allocate(seq, seq.num_tokens + 1)
    with torch.inference_mode():
        assert path.logits(plan_of((seqs[0], 0, 3, True), (seqs[1], 3, 1, True))) is None  # a prompt chunk
        assert path.logits(plan_of((seqs[0], 2, 1, False))) is None  # a chunk that is not sampled
        assert path.logits(plan_of((seqs[0], 2, 1, True), (seqs[1], 3, 1, True))) is not None
    assert path.graphs.captured == 1


@needs_native
def test_the_native_loop_declines_prompt_chunks_and_more_rows_than_it_holds(tmp_path: Path) -> None:
    runner = quantised_runner("llama-tied", tmp_path, torch.float32, "int4")
    path = runner.decode_path
    assert isinstance(path, NativeDecode) and runner.kernel_path == "native"
    seqs = [make_seq([i + 1, i + 2]) for i in range(path.decoder.max_rows + 1)]
    manager = BlockManager(runner.num_blocks, BLOCK_SIZE)
    for seq in seqs:
        manager.allocate(seq, 3)
    with torch.inference_mode():
        assert path.logits(plan_of((seqs[0], 0, 2, True))) is None  # a prompt chunk
        assert path.logits(plan_of(*((seq, 1, 1, True) for seq in seqs))) is None  # one row too many
        logits = path.logits(plan_of(*((seq, 1, 1, True) for seq in seqs[:-1])))
    assert logits is not None and logits.shape == (len(seqs) - 1, 97)
