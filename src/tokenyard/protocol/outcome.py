"""The record of one finished gateway request, shared by the gateway (which fills it in) and the
listeners that consume it: metrics, metering and conversation logs (see gateway/outcome.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class RequestOutcome(BaseModel):
    """What one gateway request was and did; the shape metrics, usage records and logs are built from."""

    record_id: str = Field(description="the gateway's own id for this call: unique, whatever X-Request-ID says")
    request_id: str
    method: str
    endpoint: str
    started_at: datetime
    tenant: str | None = None
    key_prefix: str | None = None
    model: str | None = None
    worker: str | None = Field(default=None, description="id of the worker that answered (the last one, if resumed)")
    model_revision: str | None = Field(default=None, description="the weights and precision that answered")
    status: int = 0
    error_code: str | None = Field(default=None, description="the error's `code` when the answer was an error")
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = Field(default=0, description="as the worker counted them")
    cached_tokens: int = 0
    generated_tokens: int = Field(default=0, description="completion tokens the gateway received from the engine")
    delivered_tokens: int = Field(default=0, description="completion tokens in chunks handed to the client")
    client_disconnected: bool = False
    latency_s: float = 0.0
    ttft_s: float | None = None
    finish_reasons: list[str | None] = Field(default_factory=list)
    filter_actions: list[Any] = Field(default_factory=list)
    request: dict[str, Any] | None = Field(default=None, description="the request body, when content is kept")
    outputs: list[str] = Field(default_factory=list, description="each choice's text, when content is kept")
