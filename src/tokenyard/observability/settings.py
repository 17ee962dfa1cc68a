"""Typed configuration sections for metrics, logs and tracing (see docs/configuration.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricsConfig(_Section):
    require_auth: bool = Field(
        default=False,
        description="GET /metrics needs the admin key (TOKENYARD_ADMIN_KEY) as a bearer token",
    )


class LoggingConfig(_Section):
    format: Literal["auto", "json", "text"] = Field(
        default="auto", description="auto: readable lines on a terminal, one JSON object per line otherwise"
    )
    level: Literal["debug", "info", "warning", "error"] = "info"


class TracingConfig(_Section):
    enabled: bool = Field(default=False, description="export OpenTelemetry spans (needs the `otel` extra)")
    endpoint: str = Field(
        default="http://127.0.0.1:4318/v1/traces", description="OTLP/HTTP traces endpoint of a collector"
    )
    sample_ratio: float = Field(default=1.0, ge=0, le=1, description="share of requests traced")
