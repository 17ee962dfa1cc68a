"""Batched sampling on hand-made logits: penalties, bias, min_p, min_tokens, logprobs, per-row seeds."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import torch

from tokenyard.engine.base import SamplingParams
from tokenyard.engine.sampling import apply_min_p, apply_penalties, make_generator, sample_batch

CPU = torch.device("cpu")


@dataclass
class Row:
    params: SamplingParams
    prompt_token_ids: list[int] = field(default_factory=list)
    output_token_ids: list[int] = field(default_factory=list)
    eos_token_ids: Collection[int] = (0,)
    guide: None = None


def greedy(**changes: object) -> SamplingParams:
    return SamplingParams(max_tokens=10, temperature=0, **changes)  # type: ignore[arg-type]


def pick(logits: list[float], row: Row) -> int:
    tokens, _ = sample_batch(torch.tensor([logits]), [row], [make_generator(0, CPU)])
    return tokens[0]


def test_all_greedy_batch_is_one_argmax() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, 0.0, 1.0]])
    rows = [Row(greedy()), Row(greedy())]
    assert sample_batch(logits, rows, [make_generator(0, CPU)] * 2) == ([1, 0], [None, None])


def test_presence_and_frequency_penalties_count_output_tokens_only() -> None:
    logits = torch.tensor([1.0, 1.0, 1.0, 1.0])
    out = apply_penalties(logits, [0], [1, 1, 2], presence=0.5, frequency=0.25, repetition=1.0)
    assert out.tolist() == [1.0, 0.0, 0.25, 1.0]


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits() -> None:
    out = apply_penalties(torch.tensor([2.0, -2.0, 2.0]), [0], [1], presence=0, frequency=0, repetition=2.0)
    assert out.tolist() == [1.0, -4.0, 2.0]


def test_logit_bias_can_force_or_forbid_a_token() -> None:
    assert pick([0.0, 5.0, 1.0], Row(greedy(logit_bias=((2, 10.0),)))) == 2
    assert pick([0.0, 5.0, 1.0], Row(greedy(logit_bias=((1, -100.0),)))) == 2


def test_min_tokens_masks_eos_and_stop_ids_until_reached() -> None:
    row = Row(greedy(min_tokens=2, stop_token_ids=(1,)), output_token_ids=[5])
    assert pick([9.0, 8.0, 1.0], row) == 2
    row.output_token_ids.append(5)
    assert pick([9.0, 8.0, 1.0], row) == 0


def test_min_p_drops_tokens_far_below_the_top() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    kept = apply_min_p(probs, 0.2)
    assert kept[3] == 0 and kept[2] > 0
    torch.testing.assert_close(kept.sum(), torch.tensor(1.0))


def test_logprobs_report_the_token_and_alternatives() -> None:
    _, logprobs = sample_batch(torch.tensor([[0.0, 2.0, 1.0]]), [Row(greedy(logprobs=2))], [make_generator(0, CPU)])
    entry = logprobs[0]
    assert entry is not None and entry.token_id == 1
    assert [token for token, _ in entry.top] == [1, 2]
    assert abs(sum(torch.tensor([lp for _, lp in entry.top]).exp().tolist()) - 0.91) < 0.01


def test_a_seeded_row_draws_the_same_tokens_whatever_its_neighbours() -> None:
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    seeded = Row(SamplingParams(max_tokens=5, temperature=1.0, seed=3))
    alone = [sample_batch(logits[1:2], [seeded], [gen])[0][0] for gen in [make_generator(3, CPU)] for _ in range(1)]
    neighbours = [Row(SamplingParams(max_tokens=5, temperature=0.7, top_k=3)), seeded, Row(greedy())]
    gens = [make_generator(9, CPU), make_generator(3, CPU), make_generator(1, CPU)]
    assert sample_batch(logits, neighbours, gens)[0][1] == alone[0]
