"""Token sampling as a ladder of small pure functions on tensors, after gpt-fast.

`logits_to_probs` applies temperature, top-k and top-p; `sample_next_token` picks greedily at
temperature 0 and otherwise draws from the probabilities with the request's own `torch.Generator`,
so a seeded request gives the same tokens whatever else the engine is running. The functions take
logits of shape [..., vocab] and scalar parameters, so a batching engine can call them per row.
"""

from __future__ import annotations

import secrets

import torch


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A per-request random generator: seeded when the client asked, else from the OS's entropy."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else secrets.randbits(63))
    return generator


def apply_top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the `top_k` largest logits; 0 (or a k over the vocabulary) keeps them all."""
    # logits: [..., V]
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth_largest = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # [..., 1]
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def apply_top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of tokens whose mass reaches `top_p`, renormalised."""
    # probs: [..., V], rows sum to 1
    if top_p >= 1.0:
        return probs
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of strictly more likely tokens
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)  # the top token always stays
    filtered = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return filtered / filtered.sum(dim=-1, keepdim=True)


def logits_to_probs(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Temperature, then top-k, then top-p; float32 so bfloat16 logits do not lose the tail."""
    # logits: [..., V] -> probs: [..., V]
    scaled = logits.float() / max(temperature, 1e-5)
    probs = torch.softmax(apply_top_k(scaled, top_k), dim=-1)
    return apply_top_p(probs, top_p)


def sample_next_token(
    logits: torch.Tensor,
    generator: torch.Generator,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
) -> int:
    """One token id from the logits of the last position; greedy when temperature is 0."""
    # logits: [V]
    if temperature == 0:
        return int(torch.argmax(logits, dim=-1).item())
    probs = logits_to_probs(logits, temperature, top_k, top_p)
    return int(torch.multinomial(probs, num_samples=1, generator=generator).item())
