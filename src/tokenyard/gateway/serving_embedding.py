"""POST /v1/embeddings: texts or token ids in, vectors out as floats or base64."""

from __future__ import annotations

import base64
import struct
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from tokenyard.errors import InvalidRequestError
from tokenyard.gateway.failover import with_failover
from tokenyard.gateway.outcome import tracker_of
from tokenyard.gateway.principal import tenant_of
from tokenyard.gateway.request_mapping import new_request_id
from tokenyard.gateway.router import Router
from tokenyard.gateway.worker_client import WorkerClient
from tokenyard.protocol.internal import DispatchResponse, EmbedRequest, EmbedResponse
from tokenyard.protocol.openai import EmbeddingData, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage


class PydanticJSONResponse(JSONResponse):
    """A JSON response that pydantic writes (in Rust) from the response model, rather than `json.dumps`
    of a dict of Python floats: the vectors are most of an embeddings response."""

    def render(self, content: Any) -> bytes:
        return content.model_dump_json().encode() if isinstance(content, BaseModel) else super().render(content)


def to_base64(vector: list[float]) -> str:
    """Little-endian float32, the layout OpenAI's clients decode."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def worker_request(body: EmbeddingRequest) -> EmbedRequest:
    texts: list[str] | None = None
    token_ids: list[list[int]] | None = None
    value = body.input
    if isinstance(value, str):
        texts = [value]
    elif value and all(isinstance(v, int) for v in value):
        token_ids = [list(value)]  # type: ignore[arg-type]
    elif value and all(isinstance(v, str) for v in value):
        texts = list(value)  # type: ignore[arg-type]
    elif value:
        token_ids = [list(v) for v in value]  # type: ignore[arg-type]
    items: list[str] | list[list[int]] = texts if texts is not None else token_ids or []
    if not items or any(len(item) == 0 for item in items):
        raise InvalidRequestError("'input' must not be empty, nor contain an empty item.", param="input")
    return EmbedRequest(
        request_id=new_request_id("emb"),
        model=body.model,
        texts=texts,
        token_ids=token_ids,
        dimensions=body.dimensions,
    )


class EmbeddingServing:
    def __init__(self, router: Router, workers: WorkerClient, max_attempts: int) -> None:
        self.router = router
        self.workers = workers
        self.max_attempts = max_attempts

    async def create(self, body: EmbeddingRequest, raw: Request | None = None) -> JSONResponse:
        request = worker_request(body)
        request.tenant = tenant_of(raw.state) if raw is not None else None
        tracker = tracker_of(raw.state if raw is not None else None)
        tracker.begin(body.model, body)

        async def embed(target: DispatchResponse) -> EmbedResponse:
            tracker.worker = target.worker_id
            return await self.workers.embed(target.address, request)

        result = await with_failover(self.router, body.model, embed, self.max_attempts, tenant=request.tenant)
        tracker.set_usage(result.prompt_tokens, 0, 0)
        tracker.model_revision = result.model_revision
        encode = to_base64 if body.encoding_format == "base64" else (lambda v: v)
        response = EmbeddingResponse(
            data=[EmbeddingData(index=i, embedding=encode(v)) for i, v in enumerate(result.embeddings)],
            model=body.model,
            usage=EmbeddingUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens),
        )
        return PydanticJSONResponse(response)
