"""Choices summed up: each choice's text, finish reason and token counts, and the answer's usage.

Streamed and whole answers count the same way: a `ChoiceResult` per choice, fed every chunk the
client is sent, then `usage_of` the lot and `track_answer` for the request's record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tokenyard.gateway.outcome import RequestTracker
from tokenyard.protocol.finish import ChunkFinishReason
from tokenyard.protocol.internal import GenerateChunk, TokenLogprobs
from tokenyard.protocol.openai import Usage


@dataclass
class ChoiceResult:
    """One choice's stream summed up: its text (non-streamed answers only) and its usage."""

    text: str = ""
    finish_reason: ChunkFinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None  # from the first chunk: a resumed stream's worker would count its own
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprobs] | None = None
    prompt_text: str | None = None
    worker: str | None = None  # the worker that produced it (the last one, if the stream was resumed)

    def count(self, chunk: GenerateChunk) -> None:
        """Usage and the finish reason: what a stream keeps of each chunk."""
        self.prompt_tokens = chunk.prompt_tokens
        self.completion_tokens = chunk.completion_tokens
        if self.cached_tokens is None:
            self.cached_tokens = chunk.cached_tokens
        self.finish_reason = chunk.finish_reason or self.finish_reason

    def add(self, chunk: GenerateChunk) -> None:
        """Everything: text, logprobs, the prompt's echo, usage."""
        self.count(chunk)
        self.text += chunk.text
        self.logprobs += chunk.logprobs or []
        if self.prompt_text is None:
            self.prompt_text = chunk.prompt_text
        if self.prompt_logprobs is None:
            self.prompt_logprobs = chunk.prompt_logprobs

    @property
    def cumulative_logprob(self) -> float:
        """The sum of the tokens' logprobs: how best_of ranks candidates, as OpenAI does."""
        return sum(entry.logprob or 0.0 for entry in self.logprobs)


def usage_of(results: Sequence[ChoiceResult], choices_per_prompt: int) -> Usage:
    """OpenAI's usage: each prompt counted once, every generated token (all best_of candidates too).

    Results come grouped by prompt. A prompt's cached tokens are the fewest any of its choices
    reported: its choices share one prefill, so the others' hits on it are not the client's saving.
    """
    groups = [results[i : i + choices_per_prompt] for i in range(0, len(results), choices_per_prompt)]
    return Usage.of(
        sum(group[0].prompt_tokens for group in groups),
        sum(result.completion_tokens for result in results),
        sum(min(result.cached_tokens or 0 for result in group) for group in groups),
    )


def track_answer(tracker: RequestTracker, results: Sequence[ChoiceResult], usage: Usage, *, whole: bool) -> None:
    """The request's record: usage as the workers counted it, each choice's text and finish reason.

    `whole`: a non-streamed answer, handed over in one piece, so everything generated was delivered.
    """
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    tracker.set_usage(usage.prompt_tokens, usage.completion_tokens, cached)
    tracker.set_outputs([r.text for r in results], [r.finish_reason for r in results])
    if whole:
        tracker.delivered_all()
