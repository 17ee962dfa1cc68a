"""The gateway's metrics from outcome records, and the open-streams gauge."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from prometheus_client import CollectorRegistry

from tokenyard.gateway.filtering import FilterAction
from tokenyard.observability.gateway import GatewayMetrics
from tokenyard.observability.http import OpenStreamsMiddleware
from tokenyard.protocol.outcome import RequestOutcome


def _outcome(**fields: Any) -> RequestOutcome:
    defaults: dict[str, Any] = {
        "record_id": "r",
        "request_id": "q",
        "method": "POST",
        "endpoint": "/v1/chat/completions",
        "started_at": datetime.now(timezone.utc),
        "model": "小模型",
        "tenant": "租户",
        "status": 200,
    }
    return RequestOutcome(**{**defaults, **fields})


def _value(metrics: GatewayMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_an_outcome_counts_request_latency_and_tokens() -> None:
    metrics = GatewayMetrics(CollectorRegistry(), served=lambda model: model == "小模型")
    metrics.observe(
        _outcome(latency_s=1.3, ttft_s=0.3, generated_tokens=11, prompt_tokens=7, completion_tokens=11, cached_tokens=4)
    )
    labels = {"model": "小模型", "tenant": "租户"}
    assert _value(metrics, "tokenyard_gateway_requests_total", endpoint="chat", status="200", **labels) == 1
    assert _value(metrics, "tokenyard_gateway_prompt_tokens_total", **labels) == 7
    assert _value(metrics, "tokenyard_gateway_completion_tokens_total", **labels) == 11
    assert _value(metrics, "tokenyard_gateway_cached_tokens_total", **labels) == 4
    assert _value(metrics, "tokenyard_gateway_time_to_first_token_seconds_sum", model="小模型") == 0.3
    # Ten gaps of (1.3 - 0.3) / 10 = 0.1 s each: weighted per token.
    assert _value(metrics, "tokenyard_gateway_inter_token_latency_seconds_count", model="小模型") == 10
    assert _value(metrics, "tokenyard_gateway_inter_token_latency_seconds_bucket", model="小模型", le="0.1") == 10


def test_labels_stay_bounded_and_refusals_have_reasons() -> None:
    metrics = GatewayMetrics(CollectorRegistry(), served=lambda model: model == "小模型")
    metrics.observe(_outcome(model="x" * 300, status=404, tenant=None))
    metrics.observe(_outcome(status=429, error_code="quota_exceeded"))
    metrics.observe(_outcome(status=429, error_code="overloaded", endpoint="/v1/embeddings"))
    metrics.observe(_outcome(endpoint="/admin/keys"))  # not a /v1 call: not counted
    masked = FilterAction(stage="output", action="masked", rule_id="r1", list_name="words", where="choices[0]")
    metrics.observe(_outcome(filter_actions=[masked, {"stage": "input", "action": "refused"}], status=400))
    unknown = {"model": "unknown", "tenant": "anonymous", "endpoint": "chat", "status": "404"}
    assert _value(metrics, "tokenyard_gateway_requests_total", **unknown) == 1
    assert _value(metrics, "tokenyard_gateway_rejected_requests_total", reason="quota", tenant="租户") == 1
    assert _value(metrics, "tokenyard_gateway_rejected_requests_total", reason="saturation", tenant="租户") == 1
    total = sum(
        sample.value
        for family in metrics.registry.collect()
        if family.name == "tokenyard_gateway_requests"
        for sample in family.samples
        if sample.name.endswith("_total")
    )
    assert total == 4
    for stage in ("input", "output"):
        hits = {"where": stage, "tenant": "租户"}
        assert _value(metrics, "tokenyard_gateway_content_filter_hits_total", **hits) == 1


async def test_a_stream_is_open_while_it_is_sent() -> None:
    metrics = GatewayMetrics(CollectorRegistry())
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat() -> StreamingResponse:
        async def events() -> Any:
            yield f"data: {metrics.registry.get_sample_value('tokenyard_gateway_open_streams')}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    app.add_middleware(OpenStreamsMiddleware, metrics=lambda: metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as client:
        response = await client.post("/v1/chat/completions")
    assert response.text == "data: 1.0\n\n"
    assert metrics.registry.get_sample_value("tokenyard_gateway_open_streams") == 0
