"""The worker's HTTP app: generate (NDJSON stream), embed, count tokens, status, health, metrics.

State lives on `app.state.worker` (a WorkerRuntime); nothing is bound at import time. The app
starts serving (and registers as `loading`) before its model is loaded, when given a loader.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.routing import Route

from tokenyard.engine.base import EmbeddingEngine, GenerationEngine, GenerationOutput, PromptTokenizer
from tokenyard.errors import InvalidRequestError, ModelLoadError, TokenyardError
from tokenyard.gateway.request_id import RequestIdMiddleware
from tokenyard.observability.endpoint import install_metrics_endpoint, new_registry
from tokenyard.observability.latency import StreamTimer
from tokenyard.observability.logs import LogContextMiddleware
from tokenyard.observability.nvml import register_accelerator_metrics
from tokenyard.observability.settings import MetricsConfig
from tokenyard.observability.worker import WorkerMetrics, WorkerSnapshot
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
from tokenyard.worker.memory import IdleTrim
from tokenyard.worker.outputs import EngineOutputs
from tokenyard.worker.prompts import PreparedRequest, encode_prompt, prepare
from tokenyard.worker.runtime import WorkerRuntime

__all__ = ["WorkerRuntime", "create_app"]

logger = logging.getLogger(__name__)
# Loads the model (in a thread), reporting progress; returns the engine and its kind.
Loader = Callable[[Callable[[str], None]], tuple[GenerationEngine | EmbeddingEngine, ModelKind]]


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
    timer: StreamTimer,
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
            timer.tokens(output.num_new_tokens)
            chunk = _chunk(output, prepared, tokenizer, first=not sent_any)
            if output.finish_reason is not None:
                chunk.model_revision = runtime.model_revision
            yield chunk.model_dump_json() + "\n"
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
        reason = "error" if failed else (last.finish_reason if last and last.finish_reason else "abort")
        seconds = runtime.metrics.finished(timer, reason) if runtime.metrics is not None else 0.0
        produced = last.num_output_tokens if last else 0
        if reason == "abort":
            logger.info("request %s aborted after %d tokens: the client went away", request_id, produced)
        else:
            logger.info("request %s: %d tokens in %.2f s (%s)", request_id, produced, seconds, reason)


def register_routes(app: FastAPI) -> None:
    @app.post("/generate")
    async def generate(body: GenerateRequest, request: Request) -> StreamingResponse:
        runtime: WorkerRuntime = request.app.state.worker
        runtime.check_accepting(body.model, body.tenant)
        engine = runtime.generation_engine()
        metrics: WorkerMetrics = request.app.state.worker_metrics
        timer = metrics.timer()
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
            _stream_lines(runtime, body.request_id, prepared, first, outputs, timer),
            media_type="application/x-ndjson",
        )

    @app.post("/abort")
    async def abort(body: AbortRequest, request: Request) -> dict[str, bool]:
        runtime: WorkerRuntime = request.app.state.worker
        await runtime.generation_engine().abort(body.request_id)
        return {"accepted": True}

    # A plain Starlette route, not a FastAPI one: for one sentence the call is mostly framework overhead,
    # and FastAPI's dependency solving, body validation and response serialisation were ~10 % of this
    # worker's CPU. Errors still reach the app's handlers (OpenAI's shape), as from any route.
    app.router.routes.append(Route("/embed", _embed, methods=["POST"]))

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
        stats = runtime.stats()
        return dataclasses.asdict(stats) if stats is not None else {"loading": runtime.loading_reason()}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(request: Request) -> JSONResponse:
        runtime: WorkerRuntime = request.app.state.worker
        status = runtime.status()
        if status.state is not WorkerState.HEALTHY:
            body = {"status": status.state.value, "reason": status.reason}
            return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
        return JSONResponse({"status": "ready"})


async def _embed(request: Request) -> Response:
    """POST /embed: an EmbedRequest in, an EmbedResponse out, read and written by pydantic directly."""
    try:
        body = EmbedRequest.model_validate(json.loads(await request.body()))
    except json.JSONDecodeError as exc:
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body", exc.pos), "msg": exc.msg}]) from None
    except ValidationError as exc:  # the same 400 as FastAPI's own validation, in the same words
        raise RequestValidationError(exc.errors(include_url=False)) from None
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
    # The engine's own lists of floats, not validated again.
    answer = EmbedResponse.model_construct(
        embeddings=vectors, prompt_tokens=tokens, model_revision=runtime.model_revision
    )
    return Response(answer.model_dump_json(), media_type="application/json")


def create_app(
    runtime: WorkerRuntime,
    cluster_token: str | None,
    *,
    loader: Loader | None = None,
    on_load_failed: Callable[[ModelLoadError], None] | None = None,
    metrics: MetricsConfig | None = None,
    admin_key: str | None = None,
) -> FastAPI:
    """The worker app; its lifespan registers and heartbeats at once, then starts the engine.

    With `loader`, the model loads in a thread after the worker registered as `loading`; a failure
    is logged and handed to `on_load_failed` (which stops the process).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(headers=cluster_headers(cluster_token)) as client:
            runtime.heartbeat = Heartbeat(
                client, runtime.config.controller, runtime.status, runtime.config.heartbeat_interval
            )
            if runtime.engine is not None:
                await _started(runtime)
            runtime.heartbeat.start()
            trim = IdleTrim(runtime.stats, runtime.config.heartbeat_interval)  # heap freed by a burst, back
            trim.start()
            loading = asyncio.create_task(_load(runtime, loader, on_load_failed)) if loader else None
            started = time.monotonic()
            yield
            if loading is not None:
                loading.cancel()
                await asyncio.gather(loading, return_exceptions=True)
            await trim.stop()
            await runtime.heartbeat.stop()
            await runtime.heartbeat.unregister(runtime.worker_id)
            logger.info("worker %s stopped after %.0f s", runtime.worker_id, time.monotonic() - started)
        if runtime.engine is not None:
            await runtime.engine.shutdown()

    app = FastAPI(title="tokenyard worker", lifespan=lifespan)
    app.state.worker = runtime
    registry = new_registry()
    snapshot = WorkerSnapshot(
        runtime.stats,
        lambda: runtime.status().state,
        device=lambda: runtime.device,
        quantization=lambda: runtime.quantization,
        queue_capacity=runtime.config.max_queue_length,
    )
    runtime.metrics = app.state.worker_metrics = WorkerMetrics(registry, runtime.model_names[0], snapshot)
    install_metrics_endpoint(app, registry, metrics or MetricsConfig(), admin_key)
    install_error_handlers(app)
    register_routes(app)
    app.add_middleware(LogContextMiddleware)
    app.add_middleware(RequestIdMiddleware)  # the gateway's X-Request-ID, for this worker's log lines
    app.add_middleware(ClusterAuthMiddleware, token=cluster_token)
    return app


async def _started(runtime: WorkerRuntime) -> None:
    """Start the loaded engine and hook its metrics up."""
    assert runtime.engine is not None
    await runtime.engine.start()
    if runtime.metrics is not None:
        runtime.metrics.watch_engine(runtime.engine)
        register_accelerator_metrics(runtime.metrics.registry, on_cuda=runtime.device == "cuda")
    logger.info("worker %s serving %s at %s", runtime.worker_id, runtime.model_names, runtime.config.address())


async def _load(runtime: WorkerRuntime, loader: Loader, on_failed: Callable[[ModelLoadError], None] | None) -> None:
    def progress(what: str) -> None:
        runtime.loading, runtime.loading_since = what, time.monotonic()
        logger.info("%s", what)

    try:
        engine, kind = await asyncio.to_thread(loader, progress)
    except Exception as exc:  # any failure ends the worker with one line, not a worker stuck loading
        failure = exc if isinstance(exc, ModelLoadError) else ModelLoadError(f"loading the model failed: {exc}")
        if not isinstance(exc, ModelLoadError):
            logger.exception("loading the model failed")
        logger.error("%s", failure)
        if on_failed is not None:
            on_failed(failure)
        return
    runtime.engine, runtime.kind = engine, kind
    await _started(runtime)
    if runtime.heartbeat is not None:
        await runtime.heartbeat.beat()  # healthy now: say so without waiting for the next interval
