"""Token sampling as a ladder of small pure functions on tensors, after gpt-fast.

`logits_to_probs` applies temperature, top-k and top-p; a row is greedy at temperature 0 and is
otherwise drawn from the probabilities with the request's own `torch.Generator`, so a seeded request
gives the same tokens whatever else the engine is running. The functions take
logits of shape [..., vocab] and scalar parameters. `sample_batch` is the batching engine's entry:
one argmax for a batch of plain greedy requests (no per-row Python), otherwise per row penalties,
logit bias, min_tokens, temperature/top-k/top-p/min-p and a draw from the row's own generator.
Guided rows (constrained decoding, `engine.guided`) have their disallowed tokens masked first, so
a greedy guided batch still takes the one-argmax path.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Sequence
from typing import Protocol

import torch

from tokenyard.engine import native
from tokenyard.engine.base import SamplingParams, TokenLogprob
from tokenyard.engine.guided import GuideMatcher, mask_guided_rows


class SequenceLike(Protocol):
    """What batched sampling reads from a request (engine.sequence.Sequence satisfies it)."""

    params: SamplingParams
    prompt_token_ids: list[int]
    output_token_ids: list[int]
    guide: GuideMatcher | None  # constrained decoding's state, for guided requests

    @property
    def eos_token_ids(self) -> Collection[int]: ...


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
    # The most likely token always stays, even when top_p underflows to 0 in float32.
    drop = mass_before >= top_p
    drop[..., 0] = False
    sorted_probs = sorted_probs.masked_fill(drop, 0.0)
    filtered = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return filtered / filtered.sum(dim=-1, keepdim=True)


PENALTY_LIMIT = 1e30  # |logit| after a repetition penalty; / the 1e-5 temperature floor is still finite


def logits_to_probs(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Temperature, then top-k, then top-p; float32 so bfloat16 logits do not lose the tail."""
    # logits: [..., V] -> probs: [..., V]
    scaled = logits.float() / max(temperature, 1e-5)
    probs = torch.softmax(apply_top_k(scaled, top_k), dim=-1)
    return apply_top_p(probs, top_p)


# --- batched sampling for the continuous-batching engine ----------------------------------------


def apply_min_p(probs: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens less likely than `min_p` times the most likely one, renormalised."""
    # probs: [..., V]
    if min_p <= 0:
        return probs
    floor = probs.amax(dim=-1, keepdim=True) * min_p  # [..., 1]
    kept = probs.masked_fill(probs < floor, 0.0)
    return kept / kept.sum(dim=-1, keepdim=True)


def apply_penalties(
    logits: torch.Tensor,
    prompt_ids: Sequence[int],
    output_ids: Sequence[int],
    *,
    presence: float,
    frequency: float,
    repetition: float,
) -> torch.Tensor:
    """OpenAI's presence/frequency penalties (on output tokens) and the CTRL repetition penalty (on all)."""
    # logits: [V] -> [V]
    logits = logits.clone()
    if repetition != 1.0:
        seen = torch.tensor(sorted(set(prompt_ids) | set(output_ids)), dtype=torch.long, device=logits.device)
        picked = logits[seen]
        # A penalty outside the dtype's range (1e-200 is valid input) would round to 0, and -inf (a
        # masked token) times 0 is NaN; bounded, boosted logits overflow at most to the largest float.
        finfo = torch.finfo(logits.dtype)
        bounded = min(max(repetition, finfo.tiny), finfo.max)
        penalized = torch.where(picked > 0, picked / bounded, picked * bounded)
        # A real logit pushed past ±PENALTY_LIMIT stays finite there, far from any unpenalised one, even
        # after the smallest temperature: had every allowed token overflowed to -inf, it would share a
        # masked token's -inf and the softmax of the row would be NaN.
        bounded_logits = penalized.clamp(-PENALTY_LIMIT, PENALTY_LIMIT)
        logits[seen] = torch.where(picked.isneginf(), picked, bounded_logits)
    if (presence or frequency) and output_ids:
        ids = torch.tensor(list(output_ids), dtype=torch.long, device=logits.device)
        counts = torch.bincount(ids, minlength=logits.shape[-1]).to(logits.dtype)  # [V]
        logits -= frequency * counts + presence * (counts > 0).to(logits.dtype)
    return logits


def process_logits(logits: torch.Tensor, seq: SequenceLike) -> torch.Tensor:
    """One row's penalties, logit bias and min_tokens masking, in that order."""
    # logits: [V] -> [V]
    params = seq.params
    logits = apply_penalties(
        logits,
        seq.prompt_token_ids,
        seq.output_token_ids,
        presence=params.presence_penalty,
        frequency=params.frequency_penalty,
        repetition=params.repetition_penalty,
    )
    for token, bias in params.logit_bias:
        if 0 <= token < logits.shape[-1]:
            logits[token] += bias
    if len(seq.output_token_ids) < params.min_tokens:
        banned = set(params.stop_token_ids) | (set() if params.ignore_eos else set(seq.eos_token_ids))
        for token in banned:
            logits[token] = float("-inf")
    return logits


def top_logprobs(logits: torch.Tensor, token: int, k: int) -> TokenLogprob:
    """The chosen token's log-probability under the model and the `k` most likely alternatives."""
    # logits: [V]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    top = torch.topk(logprobs, k) if k > 0 else None
    alternatives = tuple(zip(top.indices.tolist(), top.values.tolist(), strict=True)) if top is not None else ()
    return TokenLogprob(token_id=token, logprob=float(logprobs[token]), top=alternatives)


def prompt_logprobs(logits: torch.Tensor, next_tokens: Sequence[int], k: int) -> list[TokenLogprob]:
    """Each prompt token's logprob under the logits of the position before it, with `k` alternatives."""
    # logits: [S, V] for S consecutive positions; next_tokens: the S tokens that follow them
    logprobs = torch.log_softmax(logits.float(), dim=-1)  # [S, V]
    tokens = torch.tensor(list(next_tokens), dtype=torch.long, device=logits.device)  # [S]
    chosen = logprobs.gather(-1, tokens[:, None]).squeeze(-1).tolist()  # [S]
    tops: list[tuple[tuple[int, float], ...]] = [()] * len(chosen)
    if k > 0:
        top = torch.topk(logprobs, k, dim=-1)  # [S, k] each
        tops = [tuple(zip(i, v, strict=True)) for i, v in zip(top.indices.tolist(), top.values.tolist(), strict=True)]
    return [TokenLogprob(t, lp, top_k) for t, lp, top_k in zip(next_tokens, chosen, tops, strict=True)]


def greedy_tokens(logits: torch.Tensor) -> list[int]:
    """Each row's argmax: logits [N, V] -> N token ids. On the CPU through the native kernel where it
    loads (engine/native/argmax.cpp, the same choice as torch.argmax: 0.5–0.7 against 2.2 ms for 64
    rows of SmolLM2's vocabulary), elsewhere torch's."""
    lib = native.kernels() if logits.device.type == "cpu" and logits.dtype == torch.float32 else None
    if lib is None or logits.dim() != 2 or logits.shape[1] == 0:
        return logits.argmax(dim=-1).tolist()
    rows = logits.contiguous()
    out = torch.empty(rows.shape[0], dtype=torch.int64)
    lib.rows_argmax(rows.data_ptr(), rows.shape[0], rows.shape[1], out.data_ptr())
    return out.tolist()


def sample_batch(
    logits: torch.Tensor, seqs: Sequence[SequenceLike], generators: Sequence[torch.Generator]
) -> tuple[list[int], list[TokenLogprob | None]]:
    """One token per row, each with its own parameters and random generator; logprobs where asked."""
    # logits: [N, V], float32
    params = [seq.params for seq in seqs]
    masked = mask_guided_rows(logits, [seq.guide for seq in seqs])  # logprobs stay the model's own
    if all(p.is_greedy and not p.needs_logit_processing and p.logprobs is None for p in params):
        return greedy_tokens(masked), [None] * len(seqs)  # the common case: one op, one sync
    tokens, logprobs = [], []
    for row, masked_row, seq, generator in zip(logits, masked, seqs, generators, strict=True):
        p = seq.params
        processed = process_logits(masked_row, seq) if p.needs_logit_processing else masked_row
        if p.is_greedy:
            token = int(processed.argmax())
        else:
            probs = apply_min_p(logits_to_probs(processed, p.temperature, p.top_k, p.top_p), p.min_p)
            token = int(torch.multinomial(probs, num_samples=1, generator=generator))
        tokens.append(token)
        logprobs.append(top_logprobs(row, token, p.logprobs) if p.logprobs is not None else None)
    return tokens, logprobs
