"""Entry point for `tokenyard controller`: build the app from its config and serve it until a signal."""

from __future__ import annotations

import logging

from tokenyard import web
from tokenyard.config import ControllerConfig
from tokenyard.controller.app import create_app
from tokenyard.observability.settings import MetricsConfig

logger = logging.getLogger(__name__)


def run_controller(
    config: ControllerConfig,
    cluster_token: str | None,
    metrics: MetricsConfig | None = None,
    admin_key: str | None = None,
) -> None:
    """Serve the controller on config.host:config.port; blocks until SIGINT/SIGTERM."""
    app = create_app(config, cluster_token, metrics=metrics, admin_key=admin_key)
    logger.info(
        "controller listening on http://%s:%d (dispatch %s, cluster token %s)",
        config.host,
        config.port,
        config.dispatch.value,
        "set" if cluster_token else "not set: loopback peers only",
    )
    web.serve_app(app, config.host, config.port)
