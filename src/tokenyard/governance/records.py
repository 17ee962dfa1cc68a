"""The records a finished request leaves: one usage record (billing) and, with logs on, its conversation.

Both are built from the gateway's per-request outcome (`gateway.outcome.RequestOutcome`) and travel
through the journal as one JSON entry, so the database writer stores a call's usage and its
conversation in one transaction. Billing rule: a call is charged when a worker answered it (200)
or when the client left mid-answer (499), for its prompt and for the completion tokens the client
received (a streamed answer cut short is billed for what was delivered; the tokens the engine
generated are recorded beside it). Errors are recorded at no charge.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field

from tokenyard.governance.billing import PriceTable, TokenCounts
from tokenyard.protocol.outcome import RequestOutcome

StoreContent = Literal["full", "hash", "none"]
BILLED_STATUSES = (200, 499)
CONTENT_KEYS = ("messages", "prompt", "input", "tools")


class UsageRecord(BaseModel):
    """One call's usage and cost, keyed by the gateway's own record id."""

    id: str
    request_id: str
    created_at: datetime
    tenant: str = ""
    key_prefix: str = ""
    model: str = ""
    worker: str | None = None
    endpoint: str
    status: int
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0
    delivered_tokens: int = 0
    billed_completion_tokens: int = 0
    calls_billed: int = 0
    cost: Decimal = Decimal(0)
    latency_ms: int = 0
    ttft_ms: int | None = None
    finish_reason: str | None = None
    filter_actions: list[Any] = Field(default_factory=list)


class ConversationRecord(BaseModel):
    """A stored exchange: the request (per the tenant's `store_content`), the answers, usage, timings."""

    id: str
    request_id: str
    created_at: datetime
    tenant: str = ""
    key_prefix: str = ""
    model: str = ""
    worker: str | None = None
    model_revision: str | None = Field(default=None, description="weights fingerprint or hub commit, and precision")
    endpoint: str
    status: int
    store_content: StoreContent = "full"
    request: dict[str, Any] = Field(default_factory=dict, description="parameters always; content per store_content")
    outputs: list[str] = Field(default_factory=list)
    content_sha256: str | None = None
    usage: dict[str, int] = Field(default_factory=dict)
    cost: Decimal = Decimal(0)
    latency_ms: int = 0
    ttft_ms: int | None = None
    finish_reasons: list[str | None] = Field(default_factory=list)
    filter_actions: list[Any] = Field(default_factory=list)

    def searchable_text(self) -> str:
        """The text `logs list --contains` looks in."""
        return "\n".join([_text_of(self.request.get(k)) for k in CONTENT_KEYS] + self.outputs)


def billed_tokens(outcome: RequestOutcome) -> tuple[int, int]:
    """(calls, completion tokens) the call is charged for, by the rule in the module docstring."""
    if outcome.status not in BILLED_STATUSES or (outcome.status == 499 and outcome.prompt_tokens == 0):
        return 0, 0
    completion = outcome.delivered_tokens if outcome.status == 499 or outcome.stream else outcome.completion_tokens
    return 1, min(completion, max(outcome.completion_tokens, outcome.generated_tokens))


def usage_record(outcome: RequestOutcome, prices: PriceTable) -> UsageRecord:
    """The usage record of a finished request (`outcome` is a gateway RequestOutcome)."""
    calls, completion = billed_tokens(outcome)
    tokens = TokenCounts(
        prompt_tokens=outcome.prompt_tokens if calls else 0,
        completion_tokens=completion,
        cached_tokens=outcome.cached_tokens if calls else 0,
    )
    return UsageRecord(
        id=outcome.record_id,
        request_id=outcome.request_id,
        created_at=outcome.started_at,
        tenant=outcome.tenant or "",
        key_prefix=outcome.key_prefix or "",
        model=outcome.model or "",
        worker=outcome.worker,
        endpoint=outcome.endpoint,
        status=outcome.status,
        stream=outcome.stream,
        prompt_tokens=outcome.prompt_tokens,
        completion_tokens=outcome.completion_tokens,
        cached_tokens=outcome.cached_tokens,
        generated_tokens=outcome.generated_tokens,
        delivered_tokens=outcome.delivered_tokens,
        billed_completion_tokens=completion,
        calls_billed=calls,
        cost=prices.cost(outcome.model or "", outcome.tenant, tokens, calls=calls) if calls else Decimal(0),
        latency_ms=round(outcome.latency_s * 1000),
        ttft_ms=None if outcome.ttft_s is None else round(outcome.ttft_s * 1000),
        finish_reason=",".join(r or "" for r in outcome.finish_reasons) or None,
        filter_actions=outcome.filter_actions,
    )


def _text_of(value: Any) -> str:
    """Every string inside a request field, joined (messages, prompts, tool definitions)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_text_of(v) for v in value)
    if isinstance(value, dict):
        return "\n".join(_text_of(v) for v in value.values())
    return ""


def sha256_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _hashed(value: Any) -> Any:
    """The same structure with every string replaced by its hash (numbers, roles' places kept)."""
    if isinstance(value, str):
        return sha256_of(value)
    if isinstance(value, list):
        return [_hashed(v) for v in value]
    if isinstance(value, dict):
        return {k: v if k in ("role", "type", "name") else _hashed(v) for k, v in value.items()}
    return value


def conversation_record(outcome: RequestOutcome, store_content: StoreContent, cost: Decimal) -> ConversationRecord:
    """The conversation to store, with content kept, hashed or dropped as the tenant's policy says."""
    request = dict(outcome.request or {})
    outputs = list(outcome.outputs)
    digest = sha256_of(_text_of([request.get(k) for k in CONTENT_KEYS]) + "\n".join(outputs))
    if store_content == "hash":
        request = {k: _hashed(v) if k in CONTENT_KEYS else v for k, v in request.items()}
        outputs = [sha256_of(o) for o in outputs]
    elif store_content == "none":
        request = {k: v for k, v in request.items() if k not in CONTENT_KEYS}
        outputs = []
    return ConversationRecord(
        id=outcome.record_id,
        request_id=outcome.request_id,
        created_at=outcome.started_at,
        tenant=outcome.tenant or "",
        key_prefix=outcome.key_prefix or "",
        model=outcome.model or "",
        worker=outcome.worker,
        model_revision=outcome.model_revision,
        endpoint=outcome.endpoint,
        status=outcome.status,
        store_content=store_content,
        request=request,
        outputs=outputs,
        content_sha256=digest,
        usage={
            "prompt_tokens": outcome.prompt_tokens,
            "completion_tokens": outcome.completion_tokens,
            "cached_tokens": outcome.cached_tokens,
            "generated_tokens": outcome.generated_tokens,
            "delivered_tokens": outcome.delivered_tokens,
        },
        cost=cost,
        latency_ms=round(outcome.latency_s * 1000),
        ttft_ms=None if outcome.ttft_s is None else round(outcome.ttft_s * 1000),
        finish_reasons=outcome.finish_reasons,
        filter_actions=outcome.filter_actions,
    )
