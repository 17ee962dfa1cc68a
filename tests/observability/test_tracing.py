"""Tracing: nothing at all when off; when on, server spans in the caller's trace.

The "on" case runs in its own interpreter: OpenTelemetry's tracer provider is set once per process,
and left in this one it would trace every app the rest of the test session builds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tokenyard.observability.settings import TracingConfig
from tokenyard.observability.tracing import setup_tracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"

ON = textwrap.dedent(
    f"""
    import asyncio, json
    import httpx
    from fastapi import FastAPI
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from tokenyard.observability.settings import TracingConfig
    from tokenyard.observability.tracing import setup_tracing

    exporter = InMemorySpanExporter()
    setup_tracing("gateway", TracingConfig(enabled=True), exporter=exporter)
    app = FastAPI()

    @app.get("/health")
    async def health():
        return {{"status": "ok"}}

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://g") as client:
            headers = {{"traceparent": "00-{TRACE_ID}-00f067aa0ba902b7-01"}}
            assert (await client.get("/health", headers=headers)).status_code == 200

    asyncio.run(main())
    spans = [s for s in exporter.get_finished_spans() if s.name == "GET /health"]
    print(json.dumps([[format(s.context.trace_id, "032x"), s.resource.attributes["service.name"]] for s in spans]))
    """
)


def test_off_sets_no_provider() -> None:
    from opentelemetry import trace

    before = trace.get_tracer_provider()
    setup_tracing("gateway", TracingConfig())
    assert trace.get_tracer_provider() is before


def test_on_records_server_spans_in_the_callers_trace() -> None:
    result = subprocess.run([sys.executable, "-c", ON], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    spans = json.loads(result.stdout.strip().splitlines()[-1])
    assert spans == [[TRACE_ID, "tokenyard-gateway"]]
