"""The one shape of a request's sampling settings, from the gateway to the engine's sampler.

The gateway builds a `SamplingParams` from OpenAI's fields (`gateway.request_mapping`), it travels
to the worker inside `GenerateRequest`, the worker settles what only it can know (`max_tokens`
against the context window, the tenant's `cache_salt`, a resumed stream's tokens) with
`dataclasses.replace`, and the engine and `engine.sampling` read the same object. Plain frozen
dataclasses, so the engine pays nothing per attribute and builds them freely in tests; pydantic
checks the bounds below only where they arrive over the wire (the worker's `/generate`).

Here rather than in `engine/` because the gateway must not import the engine (torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from annotated_types import Ge, Gt, Interval

MAX_LOGPROBS = 20  # alternatives per token, OpenAI's bound for top_logprobs


@dataclass(frozen=True)
class Guide:
    """What a request's output must match (constrained decoding, compiled by `engine.guided`).

    `kind` "json_schema": `source` is a JSON schema as JSON text; `strict` refuses keywords that
    cannot be enforced (non-strict ignores them, best effort). `kind` "lark": `source` is a Lark
    grammar (llguidance's dialect). `param` is the client's field a compile error names.
    `generated`: tokens produced before a resumed stream broke, consumed by the matcher before it
    constrains anything (set by the worker).
    """

    kind: Literal["json_schema", "lark"]
    source: str
    strict: bool = True
    param: str = "response_format"
    generated: tuple[int, ...] = ()


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens and when to stop, for one request; the defaults change nothing."""

    # None: as many as fit in the context window; the worker settles it before the engine runs.
    max_tokens: Annotated[int, Ge(1)] | None = None
    temperature: Annotated[float, Ge(0)] = 1.0
    top_p: Annotated[float, Interval(gt=0, le=1)] = 1.0
    top_k: Annotated[int, Ge(0)] = 0  # 0 disables top-k
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    min_p: Annotated[float, Interval(ge=0, le=1)] = 0.0
    presence_penalty: Annotated[float, Interval(ge=-2, le=2)] = 0.0
    frequency_penalty: Annotated[float, Interval(ge=-2, le=2)] = 0.0
    repetition_penalty: Annotated[float, Gt(0)] = 1.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias added to its logit), sorted by id
    min_tokens: Annotated[int, Ge(0)] = 0
    # None: no logprobs; k >= 0: the chosen token's plus k alternatives.
    logprobs: Annotated[int, Interval(ge=0, le=MAX_LOGPROBS)] | None = None
    # The same for every prompt token after the first (such a prompt bypasses the prefix cache).
    prompt_logprobs: Annotated[int, Interval(ge=0, le=MAX_LOGPROBS)] | None = None
    guide: Guide | None = None  # constrained decoding: the output must match this schema or grammar
    cache_salt: str | None = None  # prefix-cache partition (the tenant, set by the worker)

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0

    @property
    def needs_logit_processing(self) -> bool:
        """True when anything besides temperature/top-k/top-p changes the logits (the slow path)."""
        return bool(
            self.presence_penalty
            or self.frequency_penalty
            or self.repetition_penalty != 1.0
            or self.logit_bias
            or self.min_tokens
        )
