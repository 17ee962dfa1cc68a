"""OpenTelemetry tracing, off by default: spans of every HTTP request, exported over OTLP/HTTP.

Off, nothing here imports OpenTelemetry's SDK and the gateway adds no hook, so tracing costs
nothing. On (`tracing.enabled`), the process gets an SDK tracer provider exporting to
`tracing.endpoint` (the `otel` extra: `pip install 'tokenyard[otel]'`). The spans themselves come
from FastAPI's own OpenTelemetry instrumentation (a server span per request, with its dependency,
endpoint and serialisation steps), which records once a provider is set; a second middleware would
only duplicate them. The gateway's internal calls carry the W3C `traceparent` header, so a
request's controller and worker spans join the gateway's trace.
"""

from __future__ import annotations

from typing import Any

from tokenyard.errors import ConfigError
from tokenyard.observability.settings import TracingConfig


def setup_tracing(service: str, config: TracingConfig, exporter: Any = None) -> None:
    """Install the process's tracer provider when tracing is on; `exporter` replaces OTLP in tests."""
    if not config.enabled:
        return
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

    if exporter is None:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError("tracing.enabled needs the OTLP exporter: pip install 'tokenyard[otel]'") from None
        processor: Any = BatchSpanProcessor(OTLPSpanExporter(endpoint=config.endpoint))
    else:
        processor = SimpleSpanProcessor(exporter)
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"tokenyard-{service}"}),
        sampler=ParentBasedTraceIdRatio(config.sample_ratio),
    )
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)


async def inject_trace_context(request: Any) -> None:
    """httpx request hook (added only when tracing is on): the callee's span joins this trace."""
    from opentelemetry import propagate

    propagate.inject(request.headers)
