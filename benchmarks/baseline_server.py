"""A FastChat-style baseline: an OpenAI-compatible streaming chat server with no batching.

It reproduces what FastChat 0.2.36's default `model_worker` does with a Hugging Face model, so that
benchmarks/compare.py can measure tokenyard against it on the same machine in the same run:
- every request runs its own prefill and decode loop with transformers (batch size 1), float32 as
  FastChat loads models on CPU, with a KV cache carried from step to step;
- each step's `next()` runs in Starlette's thread pool (FastChat streams a sync generator the same way),
  so concurrent requests compete for the cores instead of sharing forward passes;
- at most 5 requests generate at once (FastChat's `limit_worker_concurrency=5`), the rest wait;
- the output is decoded in full after each token and the new suffix streamed, as FastChat does.
It is one process (FastChat puts an API server in front of the worker: one more hop, slower still).
Weights come from the same GGUF as llama-server's, dequantised by tokenyard's `resolve_model`.

    .venv/bin/python benchmarks/baseline_server.py --port 8100 [--model smollm2-135m-instruct]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import iterate_in_threadpool
from transformers import AutoModelForCausalLM, AutoTokenizer

from tokenyard.models import SMOLLM2_ALIAS, resolve_model

FASTCHAT_WORKER_CONCURRENCY = 5


@dataclass(frozen=True)
class GenerationParams:
    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    ignore_eos: bool


@dataclass
class Piece:
    """One streamed step: the new text (may be empty while a character is incomplete) and counts."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None


class BaselineModel:
    """A causal LM and its tokenizer, generating one request at a time per call."""

    def __init__(self, folder: Path, dtype: torch.dtype) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
        self.eos_token_id = self.tokenizer.eos_token_id
        # transformers 5.x renamed `past_key_values` to `cache` (input and output); accept either release.
        params = inspect.signature(self.model.forward).parameters
        self.cache_name = "cache" if "cache" in params else "past_key_values"

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _next_token(self, logits: torch.Tensor, temperature: float) -> int:
        # logits: [vocab]
        if temperature <= 1e-5:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        return int(torch.multinomial(probs, num_samples=1))

    @torch.inference_mode()
    def generate(self, params: GenerationParams) -> Iterator[Piece]:
        """Prefill, then one forward pass per token; yields after every token like a streaming worker."""
        input_ids = torch.tensor([params.prompt_ids])  # [1, prompt_len]
        past = None
        output: list[int] = []
        emitted = ""
        for _ in range(params.max_tokens):
            out = self.model(input_ids=input_ids, use_cache=True, **{self.cache_name: past})
            past = getattr(out, self.cache_name)
            token = self._next_token(out.logits[0, -1], params.temperature)
            output.append(token)
            stopped = token == self.eos_token_id and not params.ignore_eos
            finish = "stop" if stopped else ("length" if len(output) == params.max_tokens else None)
            text = self.tokenizer.decode(output, skip_special_tokens=True)
            # Hold back a trailing partial UTF-8 character until the next token completes it.
            if text.endswith("\ufffd") and finish is None:
                text = emitted
            yield Piece(text[len(emitted) :], len(params.prompt_ids), len(output), finish)
            emitted = text
            if finish is not None:
                return
            input_ids = torch.tensor([[token]])  # [1, 1]


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _chunk(completion_id: str, model: str, delta: dict[str, str], finish: str | None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}},
        status_code=status,
    )


def create_app(engine: BaselineModel, model_name: str, concurrency: int) -> FastAPI:
    app = FastAPI()
    semaphore = asyncio.Semaphore(concurrency)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "baseline"}]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> StreamingResponse | JSONResponse:
        body = await request.json()
        if body.get("model") != model_name:
            return _error(404, f"model {body.get('model')!r} not found; this server has {model_name!r}")
        if not body.get("stream"):
            return _error(400, "this baseline server only streams; set stream: true")
        params = GenerationParams(
            prompt_ids=engine.encode_chat(body["messages"]),
            max_tokens=int(body.get("max_tokens") or 256),
            temperature=float(body.get("temperature", 1.0)),
            ignore_eos=bool(body.get("ignore_eos", False)),
        )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events = _stream(engine, params, model_name, include_usage, semaphore)
        return StreamingResponse(events, media_type="text/event-stream")

    return app


async def _stream(
    engine: BaselineModel, params: GenerationParams, model: str, include_usage: bool, semaphore: asyncio.Semaphore
) -> AsyncIterator[str]:
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    async with semaphore:  # waits here, like FastChat's worker, when 5 requests are already generating
        yield _sse(_chunk(completion_id, model, {"role": "assistant", "content": ""}, None))
        last: Piece | None = None
        async for piece in iterate_in_threadpool(engine.generate(params)):
            yield _sse(_chunk(completion_id, model, {"content": piece.text}, piece.finish_reason))
            last = piece
    if include_usage and last is not None:
        usage = {
            "prompt_tokens": last.prompt_tokens,
            "completion_tokens": last.completion_tokens,
            "total_tokens": last.prompt_tokens + last.completion_tokens,
        }
        yield _sse(
            {"id": completion_id, "object": "chat.completion.chunk", "model": model, "choices": [], "usage": usage}
        )
    yield "data: [DONE]\n\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--model", default=SMOLLM2_ALIAS, help="Anything tokenyard's --model takes.")
    parser.add_argument("--model-name", default=None, help="Id to serve it as (default: the resolved name).")
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("TOKENYARD_HOME", "~/.tokenyard")))
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--concurrency", type=int, default=FASTCHAT_WORKER_CONCURRENCY)
    args = parser.parse_args()
    resolved = resolve_model(args.model, args.home.expanduser())
    engine = BaselineModel(resolved.path, getattr(torch, args.dtype))
    app = create_app(engine, args.model_name or resolved.name, args.concurrency)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
