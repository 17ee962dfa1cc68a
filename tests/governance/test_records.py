"""Usage and conversation records from a request's outcome: the billing rule and the content policies."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from tokenyard.governance.billing import BillingConfig, ModelPrice, PriceTable
from tokenyard.governance.records import conversation_record, usage_record
from tokenyard.protocol.outcome import RequestOutcome

PRICES = PriceTable(
    BillingConfig(
        prices={"m": ModelPrice(per_call=Decimal("0.01"), per_1k_prompt=Decimal("1"), per_1k_completion=Decimal("2"))}
    )
)


def outcome(**fields: Any) -> RequestOutcome:
    base: dict[str, Any] = dict(
        record_id="r1", request_id="req-1", method="POST", endpoint="/v1/chat/completions",
        started_at=datetime.now(timezone.utc),
        tenant="acme", key_prefix="ty-abc", model="m", worker="w1", status=200, prompt_tokens=100,
        completion_tokens=50, generated_tokens=50, delivered_tokens=50, latency_s=0.25, ttft_s=0.05,
        finish_reasons=["stop"],
    )  # fmt: skip
    return RequestOutcome(**{**base, **fields})


def test_an_answered_call_is_billed_for_prompt_and_completion() -> None:
    record = usage_record(outcome(), PRICES)
    # 0.01 + 100 x 1 / 1000 + 50 x 2 / 1000 = 0.21
    assert record.cost == Decimal("0.210000") and record.calls_billed == 1
    assert (record.latency_ms, record.ttft_ms, record.finish_reason) == (250, 50, "stop")


def test_a_stream_cut_by_its_client_is_billed_for_what_it_received() -> None:
    cut = outcome(status=499, stream=True, completion_tokens=30, generated_tokens=30, delivered_tokens=12)
    record = usage_record(cut, PRICES)
    assert record.billed_completion_tokens == 12 and record.generated_tokens == 30
    assert record.cost == Decimal("0.134000")  # 0.01 + 0.1 + 12 x 2 / 1000


def test_errors_are_recorded_free() -> None:
    for status in (400, 429, 503):
        record = usage_record(outcome(status=status, prompt_tokens=0, completion_tokens=0), PRICES)
        assert record.cost == 0 and record.calls_billed == 0 and record.status == status


def test_content_is_kept_hashed_or_dropped_as_the_tenant_asks() -> None:
    request = {"model": "m", "messages": [{"role": "user", "content": "敏感的问题"}], "seed": 7, "temperature": 0}
    done = outcome(request=request, outputs=["回答"])
    full = conversation_record(done, "full", Decimal("0.21"))
    assert full.request["messages"][0]["content"] == "敏感的问题" and full.outputs == ["回答"]
    assert "敏感的问题" in full.searchable_text()
    hashed = conversation_record(done, "hash", Decimal("0.21"))
    assert hashed.request["messages"][0]["role"] == "user"
    assert hashed.request["messages"][0]["content"].startswith("sha256:") and hashed.request["seed"] == 7
    assert "敏感" not in hashed.model_dump_json() and hashed.content_sha256 == full.content_sha256
    none = conversation_record(done, "none", Decimal("0.21"))
    assert "messages" not in none.request and none.outputs == [] and none.request["temperature"] == 0
