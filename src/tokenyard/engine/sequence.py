"""One request's generation state, engine-agnostic: its tokens, the text streamed so far, why it ended.

After nano-vllm's `Sequence`: plain state plus the rules for when a request is done. An engine samples
a token, calls `append_token`, and streams the `GenerationOutput` it gets back. The stopping rules (EOS
unless `ignore_eos`, stop token ids, stop strings, `max_tokens`, the context length, a guided request's
completed grammar) live here once, so every engine stops requests identically. The batching engine's
scheduler also keeps its bookkeeping here: how many of the tokens have KV computed, and which cache
blocks hold them. No torch, no threads.
"""

from __future__ import annotations

from collections.abc import Collection
from collections.abc import Sequence as Seq
from typing import TYPE_CHECKING

from tokenyard.engine.base import GenerationOutput, SamplingParams, TokenLogprob
from tokenyard.engine.context_window import check_context_length
from tokenyard.engine.detokenizer import Decode, IncrementalDetokenizer, StopStringMatcher
from tokenyard.engine.logprobs import LogprobHoldback
from tokenyard.errors import InvalidRequestError
from tokenyard.protocol.finish import EngineFinishReason

if TYPE_CHECKING:
    from tokenyard.engine.guided import GuideMatcher


def validate_request(prompt: Seq[int], params: SamplingParams, *, vocab_size: int, context_length: int) -> None:
    """Refuse what the model cannot run (400s), before anything is queued."""
    if not prompt:
        raise InvalidRequestError("the prompt is empty", param="prompt")
    if params.max_tokens is not None and params.max_tokens < 1:
        raise InvalidRequestError(f"max_tokens must be at least 1, got {params.max_tokens}", param="max_tokens")
    bad = next((token for token in prompt if not 0 <= token < vocab_size), None)
    if bad is not None:
        raise InvalidRequestError(f"token id {bad} is outside the vocabulary (0..{vocab_size - 1})", param="prompt")
    bad_stop = next((token for token in params.stop_token_ids if not 0 <= token < vocab_size), None)
    if bad_stop is not None:
        raise InvalidRequestError(
            f"stop_token_ids names token id {bad_stop}, outside the vocabulary (0..{vocab_size - 1})",
            param="stop_token_ids",
        )
    bad_bias = next((token for token, _ in params.logit_bias if not 0 <= token < vocab_size), None)
    if bad_bias is not None:
        raise InvalidRequestError(
            f"logit_bias names token id {bad_bias}, outside the vocabulary (0..{vocab_size - 1})", param="logit_bias"
        )
    wanted = 1 if params.max_tokens is None else params.max_tokens  # None: whatever room the context leaves
    check_context_length(len(prompt), wanted, context_length)


class Sequence:
    """A request's prompt and output tokens, its incremental text, and its finish reason once done."""

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: Seq[int],
        params: SamplingParams,
        *,
        decode: Decode,
        eos_token_ids: Collection[int],
        context_length: int,
        guide: GuideMatcher | None = None,
    ) -> None:
        self.request_id = request_id
        self.prompt_token_ids = list(prompt_token_ids)
        self.output_token_ids: list[int] = []
        self.params = params
        self.finish_reason: EngineFinishReason | None = None
        self._eos_token_ids = eos_token_ids
        self._context_length = context_length
        self._detokenizer = IncrementalDetokenizer(decode, self.prompt_token_ids)
        self._stop_matcher = StopStringMatcher(params.stop)
        self._logprobs = LogprobHoldback()
        self.guide = guide  # constrained decoding: advanced with every token, ends the request when complete
        self._guide_complete = False
        # Scheduler bookkeeping: KV exists for all_token_ids[:num_computed_tokens], in block_table's blocks.
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0  # of those, how many came from the prefix cache
        self.block_table: list[int] = []
        self.num_hashed_blocks = 0  # leading blocks of block_table whose prefix hash is final
        self.arrival_time = 0.0

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def is_finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def eos_token_ids(self) -> Collection[int]:
        return self._eos_token_ids

    def token_at(self, index: int) -> int:
        prompt = len(self.prompt_token_ids)
        return self.prompt_token_ids[index] if index < prompt else self.output_token_ids[index - prompt]

    def append_token(self, token: int, logprob: TokenLogprob | None = None) -> GenerationOutput:
        """Record one sampled token; return the text it makes safe to stream and, if done, why."""
        self.output_token_ids.append(token)
        self.finish_reason, text = self._advance(token)
        return GenerationOutput(
            text=text,
            num_new_tokens=1,
            num_prompt_tokens=len(self.prompt_token_ids),
            num_output_tokens=len(self.output_token_ids),
            finish_reason=self.finish_reason,
            token_ids=[token],
            logprobs=self._released_logprobs(logprob, text) if logprob is not None else None,
            num_cached_tokens=min(self.num_cached_tokens, len(self.prompt_token_ids)),
        )

    def _released_logprobs(self, logprob: TokenLogprob, text: str) -> list[TokenLogprob]:
        """The logprobs of the tokens whose text is streamed now (see `engine.logprobs`)."""
        self._logprobs.add(logprob)
        if self.finish_reason is None:
            return self._logprobs.advance(text, self._stop_matcher.num_held)
        cut = self._stop_matcher.stopped
        # EOS or a stop id, which has no text (a completed grammar ends on a token that has text)
        stopping_token = self.finish_reason == "stop" and not cut and not self._guide_complete
        return self._logprobs.finish(text, stopping_token=stopping_token, cut_at_stop_string=cut)

    def _advance(self, token: int) -> tuple[EngineFinishReason | None, str]:
        params, matcher = self.params, self._stop_matcher
        may_stop = len(self.output_token_ids) > params.min_tokens  # the sampler masks them before that, too
        stops = token in params.stop_token_ids or (token in self._eos_token_ids and not params.ignore_eos)
        if may_stop and stops:
            return "stop", self._drain()  # the stopping token itself is not part of the text
        self._guide_complete = self.guide is not None and self.guide.advance(token)
        text = matcher.feed(self._detokenizer.add([token]))
        if matcher.stopped:
            return "stop", text
        if self._guide_complete:  # nothing but EOS may follow: end here rather than spend a step on it
            return "stop", text + self._drain()
        limit = params.max_tokens
        if (limit is not None and len(self.output_token_ids) >= limit) or self.num_tokens >= self._context_length:
            text += self._drain()
            return ("stop" if matcher.stopped else "length"), text
        return None, text

    def _drain(self) -> str:
        """At the end: the detokenizer's held-back text, through the stop matcher, then its held tail."""
        return self._stop_matcher.feed(self._detokenizer.flush()) + self._stop_matcher.flush()
