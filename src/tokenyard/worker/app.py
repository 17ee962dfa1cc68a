"""The worker's HTTP app: generate (NDJSON stream), embed, count tokens, status, health.

State lives on `app.state.worker` (a WorkerRuntime); nothing is bound at import time.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tokenyard.config import WorkerConfig
from tokenyard.engine.base import EmbeddingEngine, EngineStats, GenerationEngine, GenerationOutput, PromptTokenizer
from tokenyard.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    NoHealthyWorkerError,
    TokenyardError,
)
from tokenyard.protocol.internal import (
    AbortRequest,
    EmbedRequest,
    EmbedResponse,
    ErrorDetail,
    GenerateChunk,
    GenerateRequest,
    ModelKind,
    TokenCountRequest,
    TokenCountResponse,
    WorkerState,
    WorkerStatus,
)
from tokenyard.web import ClosingStreamingResponse, ClusterAuthMiddleware, cluster_headers, install_error_handlers
from tokenyard.worker.heartbeat import Heartbeat
from tokenyard.worker.logprobs import generated_logprobs, prompt_logprobs
from tokenyard.worker.outputs import EngineOutputs
from tokenyard.worker.prompts import PreparedRequest, encode_prompt, prepare

logger = logging.getLogger(__name__)


@dataclass
class WorkerRuntime:
    """Everything one worker process holds: its engine, identity and drain state."""

    config: WorkerConfig
    engine: GenerationEngine | EmbeddingEngine
    kind: ModelKind
    model_names: list[str]
    worker_id: str = field(default_factory=lambda: f"worker-{uuid.uuid4().hex[:12]}")
    draining: bool = False
    in_flight: int = 0
    heartbeat: Heartbeat | None = None
    engine_summary: str = ""  # how the model runs (loader.describe_engine), shown by `tokenyard serve`

    def status(self) -> WorkerStatus:
        stats: EngineStats = self.engine.stats()
        queue = max(stats.num_running + stats.num_waiting, self.in_flight)
        state, reason = self._state(stats, queue)
        return WorkerStatus(
            worker_id=self.worker_id,
            address=self.config.address(),
            models=self.model_names,
            kind=self.kind,
            context_length=self.engine.context_length,
            state=state,
            reason=reason,
            queue_length=queue,
            num_running=stats.num_running,
            num_waiting=stats.num_waiting,
            speed=max(stats.tokens_per_second, 1.0),
            heartbeat_interval=self.config.heartbeat_interval,
            engine=self.engine_summary,
            tenants=self.config.tenants,
        )

    def _state(self, stats: EngineStats, queue: int) -> tuple[WorkerState, str]:
        """Healthy means "can generate", not only "the process answers"."""
        if self.draining:
            return WorkerState.DRAINING, "shutting down: finishing in-flight requests"
        if queue and stats.seconds_since_progress > self.config.stuck_timeout:
            return (
                WorkerState.UNHEALTHY,
                f"engine made no progress for {stats.seconds_since_progress:.0f} s with {queue} request(s) queued",
            )
        return WorkerState.HEALTHY, ""

    def check_accepting(self, model: str, tenant: str | None = None) -> None:
        # A worker bound to tenants serves no one else, even if a request were misdirected to it.
        if model not in self.model_names or (self.config.tenants and tenant not in self.config.tenants):
            raise ModelNotFoundError(model)
        if self.draining:
            raise NoHealthyWorkerError("This worker is draining and takes no new requests.")

    def generation_engine(self) -> GenerationEngine:
        if self.kind is not ModelKind.GENERATE:
            raise InvalidRequestError("This model only computes embeddings; use /v1/embeddings.", param="model")
        return self.engine  # type: ignore[return-value]

    def embedding_engine(self) -> EmbeddingEngine:
        if self.kind is not ModelKind.EMBED:
            raise InvalidRequestError("This model does not compute embeddings.", param="model")
        return self.engine  # type: ignore[return-value]

    async def start_draining(self) -> None:
        """Stop taking work and tell the controller at once, so no new request is dispatched here."""
        self.draining = True
        logger.info("draining: %d request(s) in flight", self.in_flight)
        if self.heartbeat is not None:
            await self.heartbeat.beat()


def _chunk(
    output: GenerationOutput, prepared: PreparedRequest, tokenizer: PromptTokenizer, first: bool = False
) -> GenerateChunk:
    """One NDJSON line; for a resumed request, counted as if the stream had never broken."""
    resumed = prepared.num_resumed_tokens
    prompt_tokens = output.num_prompt_tokens - resumed
    chunk = GenerateChunk(
        text=(prepared.unsent_text if first else "") + output.text,
        token_ids=list(output.token_ids),
        num_new_tokens=output.num_new_tokens,
        prompt_tokens=prompt_tokens,
        completion_tokens=output.num_output_tokens + resumed,
        cached_tokens=min(output.num_cached_tokens, prompt_tokens),
        finish_reason=output.finish_reason,
        prompt_text=prepared.prompt_text if first else None,
    )
    if output.logprobs is not None:
        chunk.logprobs = generated_logprobs(tokenizer, output.logprobs)
    if output.prompt_logprobs is not None:
        chunk.prompt_logprobs = prompt_logprobs(tokenizer, prepared.prompt_token_ids, output.prompt_logprobs)
    return chunk


KEEPALIVE_LINE = GenerateChunk(keepalive=True).model_dump_json() + "\n"


def _error_chunk(error: TokenyardError) -> GenerateChunk:
    detail = ErrorDetail(
        message=error.message,
        type=error.error_type,
        param=error.param,
        code=error.code,
        status_code=error.status_code,
    )
    return GenerateChunk(error=detail)


async def _stream_lines(
    runtime: WorkerRuntime,
    request_id: str,
    prepared: PreparedRequest,
    first: GenerationOutput | None,
    outputs: EngineOutputs,
) -> AsyncIterator[str]:
    """NDJSON lines, with keepalives while the engine is quiet; an engine failure mid-stream becomes
    a final error line, never a cut stream."""
    last, failed, sent_any = first, False, False
    tokenizer = runtime.generation_engine().tokenizer
    try:
        while True:
            output = first if first is not None else await outputs.next()
            first = None
            if output is None:
                yield KEEPALIVE_LINE
                continue
            last = output
            yield _chunk(output, prepared, tokenizer, first=not sent_any).model_dump_json() + "\n"
            sent_any = True
    except StopAsyncIteration:
        pass
    except TokenyardError as exc:
        failed = True
        yield _error_chunk(exc).model_dump_json() + "\n"
    except Exception:
        failed = True
        logger.exception("engine failed mid-stream")
        yield _error_chunk(TokenyardError("The model worker failed while generating.")).model_dump_json() + "\n"
    finally:
        # Runs on normal end and when the gateway disconnects: closing the engine's iterator aborts it.
        await outputs.aclose()
        runtime.in_flight -= 1
        if (last is None or last.finish_reason is None) and not failed:
            produced = last.num_output_tokens if last else 0
            logger.info("request %s aborted after %d tokens: the client went away", request_id, produced)


def register_routes(app: FastAPI) -> None:
    @app.post("/generate")
    async def generate(body: GenerateRequest, request: Request) -> StreamingResponse:
        runtime: WorkerRuntime = request.app.state.worker
        runtime.check_accepting(body.model, body.tenant)
        engine = runtime.generation_engine()
        prepared = prepare(body, engine.tokenizer, engine.context_length)
        outputs = EngineOutputs(engine.generate(body.request_id, prepared.prompt_token_ids, prepared.params))
        runtime.in_flight += 1
        try:
            # Waiting briefly for the first output lets refusals (queue full) leave as a real HTTP
            # status; a request still queued after that streams keepalives until its first token.
            first = await outputs.next()
        except BaseException:
            runtime.in_flight -= 1
            await outputs.aclose()
            raise
        return ClosingStreamingResponse(
            _stream_lines(runtime, body.request_id, prepared, first, outputs), media_type="application/x-ndjson"
        )

    @app.post("/abort")
    async def abort(body: AbortRequest, request: Request) -> dict[str, bool]:
        runtime: WorkerRuntime = request.app.state.worker
        await runtime.generation_engine().abort(body.request_id)
        return {"accepted": True}

    @app.post("/embed")
    async def embed(body: EmbedRequest, request: Request) -> EmbedResponse:
        runtime: WorkerRuntime = request.app.state.worker
        runtime.check_accepting(body.model, body.tenant)
        engine = runtime.embedding_engine()
        if body.dimensions is not None and body.dimensions != engine.dimensions:
            raise InvalidRequestError(
                f"This model returns {engine.dimensions}-dimensional embeddings and cannot shorten them "
                f"to {body.dimensions}.",
                param="dimensions",
            )
        runtime.in_flight += 1
        try:
            if body.token_ids is not None:
                vectors, tokens = await engine.embed_token_ids(body.token_ids)
            else:
                vectors, tokens = await engine.embed_texts(body.texts or [])
        finally:
            runtime.in_flight -= 1
        return EmbedResponse(embeddings=vectors, prompt_tokens=tokens)

    @app.post("/count_tokens")
    async def count_tokens(body: TokenCountRequest, request: Request) -> TokenCountResponse:
        runtime: WorkerRuntime = request.app.state.worker
        engine = runtime.generation_engine()
        probe = GenerateRequest(request_id="count", model=body.model, messages=body.messages, prompt=body.prompt)
        return TokenCountResponse(
            count=len(encode_prompt(probe, engine.tokenizer)), context_length=engine.context_length
        )

    @app.get("/status")
    async def status(request: Request) -> WorkerStatus:
        runtime: WorkerRuntime = request.app.state.worker
        return runtime.status()

    @app.get("/stats")
    async def engine_stats(request: Request) -> dict[str, object]:
        """The engine's own counters (KV blocks, cache hits...) for operators and soak tests."""
        runtime: WorkerRuntime = request.app.state.worker
        return dataclasses.asdict(runtime.engine.stats())

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(request: Request) -> JSONResponse:
        runtime: WorkerRuntime = request.app.state.worker
        status = runtime.status()
        if status.state is not WorkerState.HEALTHY:
            return JSONResponse({"status": status.state.value, "reason": status.reason}, status_code=503)
        return JSONResponse({"status": "ready"})


def create_app(runtime: WorkerRuntime, cluster_token: str | None) -> FastAPI:
    """The worker app; its lifespan starts the engine, then registers and heartbeats."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.engine.start()
        async with httpx.AsyncClient(headers=cluster_headers(cluster_token)) as client:
            runtime.heartbeat = Heartbeat(
                client, runtime.config.controller, runtime.status, runtime.config.heartbeat_interval
            )
            runtime.heartbeat.start()
            started = time.monotonic()
            logger.info("worker %s serving %s at %s", runtime.worker_id, runtime.model_names, runtime.config.address())
            yield
            await runtime.heartbeat.stop()
            await runtime.heartbeat.unregister(runtime.worker_id)
            logger.info("worker %s stopped after %.0f s", runtime.worker_id, time.monotonic() - started)
        await runtime.engine.shutdown()

    app = FastAPI(title="tokenyard worker", lifespan=lifespan)
    app.state.worker = runtime
    install_error_handlers(app)
    register_routes(app)
    app.add_middleware(ClusterAuthMiddleware, token=cluster_token)
    return app
