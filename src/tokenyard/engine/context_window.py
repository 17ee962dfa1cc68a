"""The one check that a request fits the model's context window, and the one refusal it makes.

Three places ask it: the worker when it sizes a request (`worker.prompts`, before anything reaches
the engine), the engine before it queues one (`sequence.validate_request`, for callers that skip the
worker), and the embedding engine for each input. All raise `ContextLengthExceededError`, a 400
`context_length_exceeded` in OpenAI's shape that the gateway passes on as the worker sent it.
"""

from __future__ import annotations

from tokenyard.errors import ContextLengthExceededError


def check_context_length(
    prompt_tokens: int,
    max_tokens: int,
    context_length: int,
    *,
    prompt_param: str = "prompt",
    max_tokens_param: str = "max_tokens",
    where: str = "the prompt",
) -> None:
    """Refuse `prompt_tokens + max_tokens` over `context_length`.

    The error names the prompt's field when the prompt alone leaves no room for what must be
    generated (one token; none for an embedding, whose `max_tokens` is 0), else the max_tokens field:
    that is the one the client can change to fit. `where` names the prompt in the message ("input 3").
    """
    if prompt_tokens + max_tokens <= context_length:
        return
    prompt_alone = prompt_tokens + min(max_tokens, 1) > context_length
    raise ContextLengthExceededError(
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        context_length=context_length,
        param=prompt_param if prompt_alone else max_tokens_param,
        where=where,
    )
