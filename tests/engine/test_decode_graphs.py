"""The padded decode path that CUDA graphs record, run eagerly on CPU against the plain path.

A graph replays fixed shapes, so decode steps are padded to (batch, width) buckets; these tests check
that padding changes no logits and that padding rows touch only the scratch slot of the KV cache.
The captured graphs themselves are checked against this path in tests/engine/test_cuda.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.engine.test_llama import CONFIGS, make_seq, plan_of, save_random_model
from tokenyard.engine.decode_paths import GraphDecode
from tokenyard.engine.kv_cache import BlockManager
from tokenyard.engine.model_runner import BLOCK_SIZE, LlamaRunner
from tokenyard.engine.modeling.decode_graphs import DecodeGraphs, bucket_sizes


def runner_with(folder: Path, decode_graphs: str, device: str = "cpu") -> LlamaRunner:
    return LlamaRunner.load(
        folder,
        CONFIGS["llama-tied"],
        device=torch.device(device),
        dtype=torch.float32,
        quantization="none",
        kv_cache_bytes=lambda per_token: 1 << 20,
        max_positions=256,
        decode_graphs=decode_graphs,  # type: ignore[arg-type]
        max_batch=32,
    )


def test_bucket_sizes_cover_every_size_up_to_the_limit() -> None:
    assert bucket_sizes(20, 1, (1, 2, 4, 8, 16, 24, 32)) == [1, 2, 4, 8, 16, 20]
    assert bucket_sizes(16, 1, (1, 2, 4, 8, 16, 24)) == [1, 2, 4, 8, 16]
    assert bucket_sizes(1000, 256) == [256, 512, 1000]


def test_steps_fall_into_the_smallest_bucket_that_holds_them(tmp_path: Path) -> None:
    save_random_model(CONFIGS["llama-tied"], tmp_path)
    runner = runner_with(tmp_path, "eager")
    graphs = DecodeGraphs(runner.model, runner.attention, max_batch=40, max_context=1000, scratch_slot=0, capture=False)
    assert graphs.bucket(1, 1) == (1, 256)
    assert graphs.bucket(3, 257) == (4, 512)
    assert graphs.bucket(17, 600) == (24, 1000)
    assert graphs.bucket(40, 1000) == (40, 1000)
    assert graphs.bucket(41, 10) is None  # more sequences than the biggest bucket: eager
    assert graphs.bucket(2, 1001) is None  # a longer context than the widest bucket: eager


@pytest.mark.parametrize("batch", [1, 3, 5, 20])
def test_padded_decode_matches_the_plain_path_and_spares_the_cache(batch: int, tmp_path: Path) -> None:
    reference = save_random_model(CONFIGS["llama-tied"], tmp_path)
    plain, padded = runner_with(tmp_path, "off"), runner_with(tmp_path, "eager")
    outputs = []
    for runner in (plain, padded):
        manager = BlockManager(runner.num_blocks, BLOCK_SIZE)
        seqs = [make_seq([(7 * i + j) % 97 for j in range(2 + 5 * i)]) for i in range(batch)]
        for seq in seqs:
            manager.allocate(seq, seq.num_tokens + 1)
        with torch.inference_mode():
            runner.run(plan_of(*((seq, 0, seq.num_tokens, False) for seq in seqs)))  # prompts: never padded
            for seq in seqs:
                seq.output_token_ids.append(11)
            logits = runner.run(plan_of(*((seq, seq.num_tokens - 1, 1, True) for seq in seqs))).logits
        outputs.append((logits, seqs))
    assert isinstance(padded.decode_path, GraphDecode) and padded.decode_path.graphs.captured == 1
    assert padded.kernel_path == "torch" and plain.kernel_path == "torch"  # padded, but not captured
    (plain_logits, seqs), (padded_logits, _) = outputs
    assert padded_logits.shape == (batch, 97)
    torch.testing.assert_close(padded_logits, plain_logits, atol=1e-5, rtol=1e-5)
    expected = reference(input_ids=torch.tensor([seqs[-1].all_token_ids])).logits[0, -1]
    torch.testing.assert_close(padded_logits[-1], expected, atol=2e-4, rtol=1e-4)
    # Every real slot holds what the plain path wrote; padding rows wrote only the scratch slot.
    real = plain.num_blocks * BLOCK_SIZE
    torch.testing.assert_close(padded.attention.k_cache[:, :, :real], plain.attention.k_cache[:, :, :real])
    torch.testing.assert_close(padded.attention.v_cache[:, :, :real], plain.attention.v_cache[:, :, :real])
    padding_rows = (padded.decode_path.graphs.bucket(batch, 1) or (0, 0))[0] - batch
    assert bool(padded.attention.k_cache[:, :, real].abs().sum() > 0) == (padding_rows > 0)


def test_greedy_decoding_through_buckets_matches_the_plain_path(tmp_path: Path) -> None:
    save_random_model(CONFIGS["llama-tied"], tmp_path)
    plain, padded = greedy_streams(tmp_path, ("off", "eager"), "cpu")
    assert plain == padded


def greedy_streams(folder: Path, modes: tuple[str, ...], device: str) -> list[list[list[int]]]:
    """Each mode's greedy tokens for sequences of different lengths that decode together and leave one by
    one, so the batch crosses buckets."""
    streams = []
    for mode in modes:
        runner = runner_with(folder, mode, device)
        manager = BlockManager(runner.num_blocks, BLOCK_SIZE)
        seqs = [make_seq([(3 * i + j) % 97 for j in range(1 + 4 * i)]) for i in range(6)]
        for seq in seqs:
            manager.allocate(seq, seq.num_tokens + 12)
        with torch.inference_mode():
            logits = runner.run(plan_of(*((seq, 0, seq.num_tokens, True) for seq in seqs))).logits
            live = list(seqs)
            for step in range(12):
                for seq, row in zip(live, logits, strict=True):
                    seq.output_token_ids.append(int(row.argmax()))
                live = live[: len(live) - (step % 3 == 2)]  # one sequence leaves every third step
                logits = runner.run(plan_of(*((seq, seq.num_tokens - 1, 1, True) for seq in live))).logits
        path = runner.decode_path
        assert not isinstance(path, GraphDecode) or path.graphs.captured >= 3  # buckets 8, 4 and 2 at least
        streams.append([seq.output_token_ids for seq in seqs])
    return streams
