"""`tokenyard gateway`: serve the OpenAI-compatible API until a signal stops it."""

from __future__ import annotations

from tokenyard.config import Settings
from tokenyard.gateway.app import create_app
from tokenyard.web import serve_app


def run_gateway(settings: Settings) -> None:
    app = create_app(settings.gateway, settings.cluster.secret())
    serve_app(app, settings.gateway.host, settings.gateway.port, graceful_timeout=10)
