"""Turns a GenerateRequest into prompt token ids and the engine's settled SamplingParams.

The gateway sent the client's sampling settings; the worker settles what only it knows: `max_tokens`
against the context window (checked here), the tenant's cache salt, a resumed stream's tokens.

Kept apart from the HTTP layer so the rules (chat template, default max_tokens, the context check)
are unit-testable without a server.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tokenyard.engine.base import PromptTokenizer, SamplingParams
from tokenyard.engine.context_window import check_context_length
from tokenyard.errors import InvalidRequestError
from tokenyard.protocol.internal import GenerateRequest
from tokenyard.protocol.sampling import Guide


@dataclass(frozen=True)
class PreparedRequest:
    prompt_token_ids: list[int]
    params: SamplingParams
    num_resumed_tokens: int = 0  # generated before a resume; part of prompt_token_ids here
    unsent_text: str = ""  # text of the resumed tokens the client has not received yet
    prompt_text: str | None = None  # with `echo`: the prompt as text, sent back in the first chunk


def encode_prompt(request: GenerateRequest, tokenizer: PromptTokenizer) -> list[int]:
    if request.messages is not None:
        return tokenizer.encode_chat(request.messages, tools=request.tools)
    if request.prompt is not None:
        return tokenizer.encode_text(request.prompt)
    if request.prompt_token_ids is not None:
        return list(request.prompt_token_ids)
    raise InvalidRequestError("A prompt is required: send messages, prompt or token ids.", param="prompt")


def prepare(request: GenerateRequest, tokenizer: PromptTokenizer, context_length: int) -> PreparedRequest:
    """Tokenise and size the request; raises ContextLengthExceededError when it cannot fit."""
    prompt_ids = encode_prompt(request, tokenizer)
    if not prompt_ids:
        raise InvalidRequestError("The prompt is empty.", param="prompt")
    sampling = request.sampling
    resumed = request.resume.token_ids if request.resume else []
    # Unset: whatever room the prompt leaves (at least the one token every request generates).
    max_tokens = sampling.max_tokens if sampling.max_tokens is not None else max(context_length - len(prompt_ids), 1)
    check_context_length(
        len(prompt_ids),
        max_tokens,
        context_length,
        prompt_param="messages" if request.messages else "prompt",
        max_tokens_param=request.max_tokens_param,
    )
    params = replace(
        sampling,
        max_tokens=max_tokens - len(resumed),
        # A resumed stream's client already has the prompt's echo and logprobs from the first worker.
        prompt_logprobs=None if resumed else sampling.prompt_logprobs,
        guide=_resumed_guide(sampling.guide, resumed),
        cache_salt=request.tenant,
    )
    if not resumed:
        echoed = _prompt_text(request, tokenizer, prompt_ids) if request.echo else None
        return PreparedRequest(prompt_ids, params, prompt_text=echoed)
    if len(resumed) >= max_tokens:
        raise InvalidRequestError("Nothing is left to generate after the resumed tokens.", param="resume")
    return PreparedRequest(prompt_ids + resumed, params, len(resumed), _unsent(tokenizer, request))


def _prompt_text(request: GenerateRequest, tokenizer: PromptTokenizer, prompt_ids: list[int]) -> str:
    """The prompt as the client wrote it, or decoded when it came as token ids."""
    if request.prompt is not None:
        return request.prompt
    try:
        return tokenizer.decode(prompt_ids)
    except (OverflowError, ValueError, TypeError, IndexError) as exc:
        # Ids the tokenizer cannot even take (negative, past 32 bits) fail here, before the engine
        # would refuse every id outside the vocabulary by its value.
        raise InvalidRequestError(f"the prompt's token ids are outside the vocabulary: {exc}", param="prompt") from exc


def _resumed_guide(guide: Guide | None, resumed: list[int]) -> Guide | None:
    """The guide whose matcher first consumes the tokens generated before a resume (none if fresh)."""
    return None if guide is None else replace(guide, generated=tuple(resumed))


def _unsent(tokenizer: PromptTokenizer, request: GenerateRequest) -> str:
    """Text of the resumed tokens the client has not seen: held back for UTF-8 or a possible stop."""
    assert request.resume is not None
    # A character cut at the break is completed by the next tokens; leave its bytes to them.
    full = tokenizer.decode(request.resume.token_ids).rstrip("\ufffd")
    sent = request.resume.text_sent
    return full[len(sent) :] if full.startswith(sent) else ""
