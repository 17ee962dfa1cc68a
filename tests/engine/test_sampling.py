"""Sampling functions: greedy, temperature, top-k, top-p and seeded reproducibility."""

from __future__ import annotations

import pytest
import torch

from tokenyard.engine.sampling import (
    apply_top_k,
    apply_top_p,
    logits_to_probs,
    make_generator,
)

CPU = torch.device("cpu")


def sample_next_token(
    logits: torch.Tensor, generator: torch.Generator, temperature: float, top_k: int = 0, top_p: float = 1.0
) -> int:
    """One token drawn as the engine draws a row (`sample_batch`): greedy at 0, else from the filtered probs."""
    if temperature == 0:
        return int(logits.argmax())
    probs = logits_to_probs(logits, temperature, top_k, top_p)
    return int(torch.multinomial(probs, num_samples=1, generator=generator).item())


def random_logits(seed: int = 0, vocab: int = 1000) -> torch.Tensor:
    return torch.randn(vocab, generator=torch.Generator().manual_seed(seed))


def draw(seed: int | None, n: int = 20, top_k: int = 0) -> list[int]:
    """n tokens sampled at temperature 1 from fixed logits with a generator seeded by `seed`."""
    logits, generator = random_logits(), make_generator(seed, CPU)
    return [sample_next_token(logits, generator, 1.0, top_k=top_k) for _ in range(n)]


def test_temperature_zero_is_argmax() -> None:
    logits = random_logits()
    assert sample_next_token(logits, make_generator(None, CPU), 0.0) == int(logits.argmax())


def test_top_k_one_is_greedy_even_when_sampling() -> None:
    assert set(draw(None, top_k=1)) == {int(random_logits().argmax())}


def test_same_seed_same_tokens_different_seed_different_tokens() -> None:
    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_unseeded_requests_differ() -> None:
    assert draw(None) != draw(None)


def test_top_k_masks_all_but_the_k_largest() -> None:
    logits = torch.tensor([1.0, 5.0, 3.0, 4.0])
    assert apply_top_k(logits, 2).tolist() == [float("-inf"), 5.0, float("-inf"), 4.0]
    assert torch.equal(apply_top_k(logits, 0), logits)
    assert torch.equal(apply_top_k(logits, 10), logits)


def test_top_p_keeps_the_smallest_nucleus_and_renormalises() -> None:
    probs = torch.tensor([0.2, 0.5, 0.3])
    assert apply_top_p(probs, 0.7).tolist() == pytest.approx([0.0, 0.625, 0.375])
    assert apply_top_p(probs, 0.01).tolist() == pytest.approx([0.0, 1.0, 0.0])
    assert torch.equal(apply_top_p(probs, 1.0), probs)


def test_top_p_sampling_never_leaves_the_nucleus() -> None:
    logits = torch.log(torch.tensor([0.05, 0.6, 0.3, 0.05]))
    generator = make_generator(3, CPU)
    seen = {sample_next_token(logits, generator, 1.0, top_p=0.8) for _ in range(200)}
    assert seen == {1, 2}


def test_low_temperature_sharpens_and_high_temperature_flattens() -> None:
    logits = torch.tensor([2.0, 1.0, 0.0])
    cold, warm, hot = (logits_to_probs(logits, t)[0].item() for t in (0.1, 1.0, 10.0))
    assert cold > warm > hot > 1 / 3


def test_bfloat16_logits_give_float32_probabilities() -> None:
    probs = logits_to_probs(random_logits().to(torch.bfloat16), 0.7, top_k=50, top_p=0.9)
    assert probs.dtype == torch.float32
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert int((probs > 0).sum()) <= 50


def test_top_p_too_small_for_float32_keeps_the_top_token() -> None:
    # 5e-324 is 0 in float32; the nucleus must still hold the most likely token, not nothing.
    probs = torch.softmax(torch.tensor([[1.0, 3.0, 2.0]]), dim=-1)
    filtered = apply_top_p(probs, 5e-324)
    assert filtered.tolist() == [[0.0, 1.0, 0.0]]
