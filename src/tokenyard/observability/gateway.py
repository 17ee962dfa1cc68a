"""The gateway's metrics: requests, latency as clients see it, tokens, retries, refusals, streams.

One `GatewayMetrics` per app (on `app.state.gateway_metrics`). Per-request series come from the one
record each /v1 request leaves (`protocol.outcome.RequestOutcome`, via `observe`, an outcome
listener), so the serving code is instrumented once. The rest is set by the part that knows: the
journal's backlog is read when Prometheus scrapes; quotas report each tenant's usage. Labels are
bounded: `model` is a served alias or `unknown` (never a client's free text), `tenant` a tenant.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from tokenyard.observability.latency import LatencyHistograms
from tokenyard.protocol.outcome import RequestOutcome

ANONYMOUS = "anonymous"
ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions", "/v1/embeddings": "embeddings"}
# 429 `code` -> the reason label of tokenyard_gateway_rejected_requests_total.
REJECTION_REASONS = {
    "rate_limit_exceeded": "rate_limit",
    "quota_exceeded": "quota",
    "overloaded": "saturation",
}
# Where the word filter matched (FilterAction.stage): the request's input or the model's output.
FILTER_PLACES = frozenset({"input", "output"})


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry, served: Callable[[str], bool] = lambda _model: True) -> None:
        self.registry = registry
        self._served = served  # bounds the `model` label to aliases the cluster serves
        self.requests = Counter(
            "tokenyard_gateway_requests",
            "Finished /v1 requests, by model, tenant, endpoint and HTTP status.",
            ["model", "tenant", "endpoint", "status"],
            registry=registry,
        )
        self.latency = LatencyHistograms.create(registry, "tokenyard_gateway_", ["model"], "gateway")
        self.prompt_tokens = self._token_counter("prompt", "Prompt tokens billed")
        self.completion_tokens = self._token_counter("completion", "Completion tokens billed")
        self.cached_tokens = self._token_counter("cached", "Prompt tokens served from a worker's prefix cache")
        self.retries = Counter(
            "tokenyard_gateway_retries",
            "Requests sent to another worker after one failed before the first token.",
            ["model"],
            registry=registry,
        )
        self.resumed_streams = Counter(
            "tokenyard_gateway_resumed_streams",
            "Streams resumed on another worker after theirs broke mid-stream.",
            ["model"],
            registry=registry,
        )
        self.rejected = Counter(
            "tokenyard_gateway_rejected_requests",
            "Requests refused with 429, by reason: rate_limit, quota, saturation.",
            ["reason", "tenant"],
            registry=registry,
        )
        self.filter_hits = Counter(
            "tokenyard_gateway_content_filter_hits",
            "Content-filter matches, by where: input (refused) or output (masked or stopped).",
            ["where", "tenant"],
            registry=registry,
        )
        self.open_streams = Gauge(
            "tokenyard_gateway_open_streams", "Server-sent-event streams open now.", registry=registry
        )
        self.journal_backlog = Gauge(
            "tokenyard_usage_journal_backlog_bytes",
            "Bytes of usage records in the gateway's journal not yet written to the database.",
            registry=registry,
        )
        self.quota_usage = Gauge(
            "tokenyard_tenant_quota_usage_ratio",
            "Share of a tenant's quota used this period, by quota: calls, tokens, cost (0 to 1).",
            ["tenant", "quota"],
            registry=registry,
        )

    def _token_counter(self, kind: str, documentation: str) -> Counter:
        return Counter(
            f"tokenyard_gateway_{kind}_tokens",
            f"{documentation}, by model and tenant.",
            ["model", "tenant"],
            registry=self.registry,
        )

    def retried(self, model: str) -> None:
        """A request failed on a worker before its first token and is sent to another."""
        self.retries.labels(model).inc()

    def resumed(self, model: str) -> None:
        """A stream broke mid-way and continues on another worker."""
        self.resumed_streams.labels(model).inc()

    def observe(self, outcome: RequestOutcome) -> None:
        """Count one finished /v1 request (an outcome listener)."""
        endpoint = ENDPOINTS.get(outcome.endpoint)
        if endpoint is None:
            return
        model = outcome.model if outcome.model and self._served(outcome.model) else "unknown"
        tenant = outcome.tenant or ANONYMOUS
        self.requests.labels(model, tenant, endpoint, str(outcome.status)).inc()
        self.latency.e2e.labels(model).observe(outcome.latency_s)
        if outcome.ttft_s is not None:
            self.latency.ttft.labels(model).observe(outcome.ttft_s)
            self._inter_token(model, outcome)
        self._tokens(model, tenant, outcome)
        if outcome.status == 429:
            self.rejected.labels(REJECTION_REASONS.get(outcome.error_code or "", "saturation"), tenant).inc()
        for action in outcome.filter_actions:  # gateway.filtering.FilterAction, or its dict
            stage = action.get("stage") if isinstance(action, dict) else getattr(action, "stage", None)
            self.filter_hits.labels(stage if stage in FILTER_PLACES else "unknown", tenant).inc()

    def _inter_token(self, model: str, outcome: RequestOutcome) -> None:
        """The record keeps no per-token times: each token after the first counts the request's mean
        gap once, so the histogram stays weighted per token (as the worker's own, exact one is)."""
        gaps = outcome.generated_tokens - 1
        if gaps > 0 and outcome.ttft_s is not None:
            mean = max(0.0, outcome.latency_s - outcome.ttft_s) / gaps
            histogram = self.latency.itl.labels(model)
            for _ in range(gaps):
                histogram.observe(mean)

    def _tokens(self, model: str, tenant: str, outcome: RequestOutcome) -> None:
        for counter, count in (
            (self.prompt_tokens, outcome.prompt_tokens),
            (self.completion_tokens, outcome.completion_tokens),
            (self.cached_tokens, outcome.cached_tokens),
        ):
            if count:
                counter.labels(model, tenant).inc(count)
