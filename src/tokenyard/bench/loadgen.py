"""Closed-loop streaming load generator for any OpenAI-compatible server.

At each concurrency level, N workers send streaming requests back to back (a worker sends its next
request the moment its previous one ends) until the level's request count is spent, as vLLM's and
llama.cpp's benchmarks do with a fixed concurrency. One `httpx.AsyncClient` (one connection pool) serves
every request, and server-sent events are parsed here line by line with `json.loads`, because per-chunk
pydantic models in the client would eat the CPU the server under test needs (2 cores here).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from tokenyard.bench.stats import LevelSummary, RequestResult, summarize

DEFAULT_PROMPTS = (
    "Explain in a few paragraphs how a bicycle stays upright while moving.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "What are the main differences between a list and a tuple in Python? Give examples.",
    "Describe the water cycle to a ten-year-old.",
    "List some tips for getting better sleep and explain why each one helps.",
    "Summarise the causes and effects of the industrial revolution.",
    "How does a hash table work, and what happens when two keys collide?",
    "Write a friendly email inviting a colleague to a team lunch next Friday.",
)
ERROR_TEXT_LIMIT = 300


class BenchError(Exception):
    """The benchmark cannot run at all (server unreachable, no model, warm-up failed); one-line message."""


@dataclass(frozen=True)
class BenchSettings:
    """Everything one benchmark run needs; `base_url` ends in /v1."""

    base_url: str
    model: str
    prompts: tuple[str, ...] = DEFAULT_PROMPTS
    max_tokens: int = 128
    chat: bool = True
    ignore_eos: bool = False
    temperature: float = 0.0
    api_key: str | None = None
    timeout: float = 600.0
    extra_body: dict[str, Any] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/chat/completions" if self.chat else f"{self.base_url}/completions"


def normalise_base_url(url: str) -> str:
    """Accept `http://host:port`, `.../v1` or `.../v1/`; return the /v1 base."""
    base = url.strip().rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"URL must start with http:// or https://, got {url!r}")
    return base if base.endswith("/v1") else f"{base}/v1"


def request_body(settings: BenchSettings, prompt: str) -> dict[str, Any]:
    """The JSON body of one streaming request; usage is asked for so tokens are counted exactly."""
    body: dict[str, Any] = {
        "model": settings.model,
        "max_tokens": settings.max_tokens,
        "temperature": settings.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if settings.chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if settings.ignore_eos:
        body["ignore_eos"] = True  # vLLM, llama-server and tokenyard extension; OpenAI itself rejects it
    body.update(settings.extra_body)
    return body


def _chunk_text(chunk: dict[str, Any], chat: bool) -> str:
    """The generated text in one stream chunk (empty for role-only, finish and usage chunks)."""
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    if not chat:
        return str(choices[0].get("text") or "")
    delta = choices[0].get("delta") or {}
    # Reasoning models stream their thoughts separately; they are generated tokens all the same.
    return str(delta.get("content") or "") + str(delta.get("reasoning_content") or "")


def _error_text(payload: Any) -> str:
    """The message of an OpenAI-shaped error object, or the payload itself, kept short."""
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        payload = payload["error"].get("message", payload["error"])
    elif isinstance(payload, dict) and "error" in payload:
        payload = payload["error"]
    return str(payload)[:ERROR_TEXT_LIMIT]


async def _consume_stream(response: httpx.Response, result: RequestResult, chat: bool) -> None:
    """Read server-sent events into `result` until [DONE]; record a stream error or an early end."""
    finished = False
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue  # blank separators, comments, `event:` lines
        data = line[5:].strip()
        if data == "[DONE]":
            return
        chunk = json.loads(data)
        if not isinstance(chunk, dict):
            raise ValueError(f"expected a JSON object, got {data[:80]!r}")
        if "error" in chunk:
            result.error = f"stream error: {_error_text(chunk)}"
            return
        if _chunk_text(chunk, chat):
            result.chunk_times.append(time.perf_counter())
        usage = chunk.get("usage")
        if usage:
            result.usage_completion_tokens = usage.get("completion_tokens")
            result.usage_prompt_tokens = usage.get("prompt_tokens")
        finished = finished or any(c.get("finish_reason") for c in chunk.get("choices") or [])
    if not finished:
        result.error = "stream ended before a finish_reason or [DONE]"


async def send_request(client: httpx.AsyncClient, settings: BenchSettings, prompt: str) -> RequestResult:
    """Send one streaming request and time it; failures are recorded on the result, never raised."""
    result = RequestResult(start=time.perf_counter())
    try:
        async with client.stream("POST", settings.endpoint, json=request_body(settings, prompt)) as response:
            if response.status_code != 200:
                body = await response.aread()
                try:
                    detail = _error_text(json.loads(body))
                except ValueError:
                    detail = body.decode(errors="replace")[:ERROR_TEXT_LIMIT]
                result.error = f"HTTP {response.status_code}: {detail}"
            else:
                await _consume_stream(response, result, settings.chat)
    except httpx.HTTPError as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_LIMIT]
    except ValueError as exc:  # a data line that is not JSON
        result.error = f"malformed stream: {exc}"[:ERROR_TEXT_LIMIT]
    result.end = time.perf_counter()
    return result


async def run_level(
    client: httpx.AsyncClient, settings: BenchSettings, concurrency: int, num_requests: int
) -> LevelSummary:
    """`concurrency` workers send requests back to back until `num_requests` have been sent."""
    prompts: Iterator[str] = itertools.islice(itertools.cycle(settings.prompts), num_requests)
    results: list[RequestResult] = []

    async def worker() -> None:
        # Single-threaded event loop: taking the next prompt cannot race between workers.
        for prompt in prompts:
            results.append(await send_request(client, settings, prompt))

    await asyncio.gather(*(worker() for _ in range(min(concurrency, num_requests))))
    return summarize(concurrency, results)


def make_client(settings: BenchSettings, max_connections: int) -> httpx.AsyncClient:
    """One pool for the whole run, sized so no request waits for a connection."""
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    return httpx.AsyncClient(
        headers=headers,
        timeout=httpx.Timeout(settings.timeout, connect=10.0),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
    )


async def list_models(client: httpx.AsyncClient, base_url: str) -> list[str]:
    """The server's model ids; BenchError when it cannot be reached or does not answer the OpenAI way."""
    try:
        response = await client.get(f"{base_url}/models")
    except httpx.HTTPError as exc:
        raise BenchError(f"cannot reach {base_url}: {type(exc).__name__}: {exc}") from None
    if response.status_code != 200:
        raise BenchError(f"GET {base_url}/models answered HTTP {response.status_code}: {response.text[:200]}")
    try:
        return [str(model["id"]) for model in response.json()["data"]]
    except (ValueError, KeyError, TypeError):
        raise BenchError(f"GET {base_url}/models did not return an OpenAI model list") from None


async def warm_up(client: httpx.AsyncClient, settings: BenchSettings, count: int) -> None:
    """Send `count` requests one by one, unmeasured; fail fast if the server cannot serve them."""
    for index in range(count):
        result = await send_request(client, settings, settings.prompts[index % len(settings.prompts)])
        if not result.ok:
            raise BenchError(f"warm-up request failed: {result.error}")


async def run_bench(
    settings: BenchSettings,
    levels: list[tuple[int, int]],
    warmup: int = 1,
    on_level: Callable[[LevelSummary], None] | None = None,
) -> tuple[BenchSettings, list[LevelSummary]]:
    """Run each (concurrency, requests) level in turn; an empty `settings.model` means the server's first model.

    Returns the settings actually used (model filled in) and one summary per level.
    """
    async with make_client(settings, max(concurrency for concurrency, _ in levels)) as client:
        models = await list_models(client, settings.base_url)
        if not settings.model:
            if not models:
                raise BenchError(f"{settings.base_url}/models lists no model; pass --model")
            settings = replace(settings, model=models[0])
        await warm_up(client, settings, warmup)
        summaries = []
        for concurrency, num_requests in levels:
            summary = await run_level(client, settings, concurrency, num_requests)
            if on_level is not None:
                on_level(summary)
            summaries.append(summary)
    return settings, summaries
