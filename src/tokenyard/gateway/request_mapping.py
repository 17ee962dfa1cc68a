"""OpenAI requests as the workers' GenerateRequests: one per choice, sampling settings built once.

A chat request with `n` choices, or a completion request with several prompts and `best_of`
candidates, becomes one GenerateRequest per choice. Each carries a `SamplingParams`
(`protocol.sampling`) built from OpenAI's fields by `sampling_params`, the one place OpenAI's
defaults are applied; the worker and the engine read that same object. Everything a client can get
wrong here is a 400 naming the field, raised before any worker is asked.
"""

from __future__ import annotations

import uuid

from tokenyard.errors import InvalidRequestError
from tokenyard.gateway.structured import ToolPlan, worker_messages
from tokenyard.protocol.internal import GenerateRequest
from tokenyard.protocol.openai import ChatCompletionRequest, CompletionRequest, SamplingFields, unsupported_fields
from tokenyard.protocol.sampling import Guide, SamplingParams

Prompt = str | list[int]

_WHY_UNSUPPORTED = {
    "suffix": "'suffix' needs a model trained for infill (fill-in-the-middle); the models served here are not.",
}


def new_request_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def refuse_unsupported(body: SamplingFields) -> None:
    """A 400 naming the first field tokenyard cannot honour yet, instead of ignoring it."""
    for name in unsupported_fields(body):
        message = _WHY_UNSUPPORTED.get(name, f"'{name}' is not supported by this server yet.")
        raise InvalidRequestError(message, param=name)


def sampling_params(
    body: SamplingFields,
    max_tokens: int | None,
    choice: int,
    *,
    logprobs: int | None = None,
    prompt_logprobs: int | None = None,
    guide: Guide | None = None,
) -> SamplingParams:
    """OpenAI's fields with OpenAI's defaults; a seed is offset per choice so n>1 choices differ.

    `max_tokens`: None for as many as fit in the context. `logprobs` (and `prompt_logprobs`): None,
    or how many alternatives to report with each token. `guide`: the constrained-decoding spec for
    response_format and tools (`gateway.structured`).
    """
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=body.top_k if body.top_k is not None and body.top_k > 0 else 0,  # vLLM's -1, like 0: no top-k
        seed=None if body.seed is None else body.seed + choice,
        stop=tuple(body.stop_list()),
        stop_token_ids=tuple(body.stop_token_ids or ()),
        ignore_eos=body.ignore_eos,
        min_p=body.min_p or 0.0,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        repetition_penalty=1.0 if body.repetition_penalty is None else body.repetition_penalty,
        logit_bias=logit_bias(body.logit_bias),
        min_tokens=body.min_tokens or 0,
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
        guide=guide,
    )


def logit_bias(value: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    """OpenAI's {"token id as a string": bias in [-100, 100]} as (token id, bias) pairs by id."""
    biases: dict[int, float] = {}
    for key, bias in (value or {}).items():
        if not key.lstrip("-").isdigit():
            raise InvalidRequestError(f"Invalid key in 'logit_bias': {key!r} is not a token id.", param="logit_bias")
        if not -100 <= bias <= 100:
            raise InvalidRequestError(
                f"Invalid value in 'logit_bias' for token {key}: {bias} is outside [-100, 100].", param="logit_bias"
            )
        biases[int(key)] = bias
    return tuple(sorted(biases.items()))


# --- chat ---------------------------------------------------------------------------------------


def requested_logprobs(body: ChatCompletionRequest) -> int | None:
    """How many alternatives to report per token (None: no logprobs); `top_logprobs` needs `logprobs`."""
    if not body.logprobs:
        if body.top_logprobs is not None:
            raise InvalidRequestError("'top_logprobs' requires 'logprobs' to be true.", param="top_logprobs")
        return None
    return body.top_logprobs or 0


def chat_requests(
    body: ChatCompletionRequest, completion_id: str, plan: ToolPlan, logprobs: int | None, tenant: str | None
) -> list[GenerateRequest]:
    """One request per choice, the same messages and tools in each."""
    messages = worker_messages(body)
    max_tokens = body.max_completion_tokens or body.max_tokens
    param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    return [
        GenerateRequest(
            request_id=f"{completion_id}-{choice}",
            model=body.model,
            messages=messages,
            tools=plan.prompt_tools,
            sampling=sampling_params(body, max_tokens, choice, logprobs=logprobs, guide=plan.guide),
            max_tokens_param=param,
            tenant=tenant,
        )
        for choice in range(body.n)
    ]


# --- text completions ---------------------------------------------------------------------------


def split_prompts(prompt: str | list[str] | list[int] | list[list[int]]) -> list[Prompt]:
    """OpenAI's four prompt forms as a list of single prompts (text or token ids)."""
    if isinstance(prompt, str):
        prompts: list[Prompt] = [prompt]
    elif prompt and all(isinstance(p, int) for p in prompt):
        prompts = [list(prompt)]  # type: ignore[arg-type]
    else:
        prompts = list(prompt)  # type: ignore[arg-type]
    if not prompts or any(len(p) == 0 for p in prompts):
        raise InvalidRequestError("The prompt must not be empty.", param="prompt")
    return prompts


def candidates_per_prompt(body: CompletionRequest) -> int:
    """How many completions to generate per prompt: `best_of` (at least `n`), else `n`."""
    if body.max_tokens == 0 and not body.echo:
        raise InvalidRequestError(
            "max_tokens must be at least 1; 0 is allowed only with echo (the prompt alone).", param="max_tokens"
        )
    best_of = body.best_of if body.best_of is not None else body.n
    if best_of < body.n:
        raise InvalidRequestError(f"best_of ({best_of}) must be at least n ({body.n}).", param="best_of")
    if best_of > body.n and body.stream:
        raise InvalidRequestError("best_of greater than n cannot be streamed; set stream to false.", param="best_of")
    return best_of


def completion_sampling(body: CompletionRequest, candidate: int, *, ranked: bool) -> SamplingParams:
    """The worker's settings; ranking best_of candidates needs their logprobs even if the client's do not."""
    logprobs = body.logprobs if body.logprobs is not None else (0 if ranked else None)
    # max_tokens 0 (with echo): generate one token and drop it, since the engine always samples one.
    max_tokens = 1 if body.max_tokens == 0 else body.max_tokens
    prompt_logprobs = body.logprobs if body.echo else None
    return sampling_params(body, max_tokens, candidate, logprobs=logprobs, prompt_logprobs=prompt_logprobs)


def completion_requests(
    body: CompletionRequest, prompts: list[Prompt], completion_id: str, candidates: int, tenant: str | None
) -> list[GenerateRequest]:
    """`candidates` requests per prompt (`split_prompts`), grouped by prompt, as `best_candidates` expects."""
    return [
        GenerateRequest(
            request_id=f"{completion_id}-{p}-{c}",
            model=body.model,
            prompt=prompt if isinstance(prompt, str) else None,
            prompt_token_ids=prompt if isinstance(prompt, list) else None,
            sampling=completion_sampling(body, c, ranked=candidates > body.n),
            echo=body.echo,
            tenant=tenant,
        )
        for p, prompt in enumerate(prompts)
        for c in range(candidates)
    ]
