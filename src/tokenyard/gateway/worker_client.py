"""Talks to workers over one shared HTTP client: streamed generation and embeddings.

Worker errors come back as typed errors with the worker's own status; a connection that breaks
or a stream that ends without a finish reason becomes a WorkerError.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator

import aiohttp
import httpx

from tokenyard.errors import UpstreamError, WorkerError, error_from_body
from tokenyard.gateway.whole_answers import post_whole
from tokenyard.protocol.internal import (
    AbortRequest,
    DispatchResponse,
    EmbedRequest,
    EmbedResponse,
    GenerateChunk,
    GenerateRequest,
)

logger = logging.getLogger(__name__)


class GenerationStream:
    """One open NDJSON stream of GenerateChunks from a worker."""

    def __init__(self, response: httpx.Response, target: DispatchResponse) -> None:
        self._response = response
        self.address = target.address
        self.worker_id = target.worker_id

    async def chunks(self) -> AsyncGenerator[GenerateChunk, None]:
        finished = False
        try:
            async for line in self._response.aiter_lines():
                if not line:
                    continue
                chunk = GenerateChunk.model_validate_json(line)
                if chunk.keepalive:
                    continue
                if chunk.error is not None:
                    err = chunk.error
                    raise UpstreamError(err.status_code, err.type, err.message, param=err.param, code=err.code)
                finished = chunk.finish_reason is not None
                yield chunk
        except httpx.HTTPError as exc:
            raise WorkerError(f"Lost the connection to worker {self.address} mid-stream: {exc}") from exc
        finally:
            await self._response.aclose()
        if not finished:
            raise WorkerError(f"Worker {self.address} ended the stream before finishing.")

    async def aclose(self) -> None:
        await self._response.aclose()


class WorkerClient:
    def __init__(
        self,
        client: httpx.AsyncClient,
        timeout: float,
        stall_timeout: float,
        whole_answers: aiohttp.ClientSession,
    ) -> None:
        self._client = client
        # Calls whose answer is read whole (embeddings) go through a leaner client (gateway/whole_answers.py).
        self._whole_answers = whole_answers
        # A worker streams at least a keepalive every few seconds, so a longer silence means it froze.
        self._timeout = httpx.Timeout(timeout, connect=5.0, read=stall_timeout)
        # The same limits for aiohttp: `connect` covers the wait for a free connection, as httpx's pool timeout.
        self._whole_timeout = aiohttp.ClientTimeout(connect=timeout, sock_connect=5.0, sock_read=stall_timeout)

    async def open_generation(self, target: DispatchResponse, request: GenerateRequest) -> GenerationStream:
        """Start generating; errors the worker answers before streaming are raised here."""
        address = target.address
        http_request = self._client.build_request(
            "POST", f"{address}/generate", content=request.model_dump_json(), timeout=self._timeout
        )
        try:
            response = await self._client.send(http_request, stream=True)
        except httpx.TransportError as exc:
            raise WorkerError(f"Could not reach worker {address}: {exc}") from exc
        if response.status_code != 200:
            await response.aread()
            await response.aclose()
            raise _error_of(response.status_code, response.content, response.headers.get("retry-after"))
        return GenerationStream(response, target)

    async def abort(self, address: str, request_id: str) -> None:
        """Ask a worker to stop a generation; best effort, as the worker may already be gone."""
        body = AbortRequest(request_id=request_id).model_dump_json()
        try:
            await self._client.post(f"{address}/abort", content=body, timeout=2.0)
        except httpx.HTTPError as exc:
            logger.debug("abort of %s at %s failed: %s", request_id, address, exc)

    async def embed(self, address: str, request: EmbedRequest) -> EmbedResponse:
        body = request.model_dump_json().encode()
        try:
            answer = await post_whole(self._whole_answers, f"{address}/embed", body, self._whole_timeout)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise WorkerError(f"Could not reach worker {address}: {str(exc) or type(exc).__name__}") from exc
        if answer.status != 200:
            raise _error_of(answer.status, answer.body, answer.headers.get("retry-after"))
        return EmbedResponse.model_validate_json(answer.body)


def _error_of(status: int, content: bytes, retry: str | None) -> Exception:
    try:
        body: object = json.loads(content)
    except ValueError:
        body = None
    return error_from_body(status, body, retry_after=float(retry) if retry else None)
