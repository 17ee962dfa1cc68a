"""The database side of metering on every database kind: idempotent writes, rollups, reports,
conversations (search, show, export, retention) and feedback votes."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tokenyard.governance.conversations import (
    ConversationFilter,
    delete_older_than,
    export_conversations,
    feedback_of,
    get_conversation,
    list_conversations,
    record_feedback,
)
from tokenyard.governance.records import ConversationRecord, UsageRecord
from tokenyard.governance.reports import UsageQuery, to_csv, usage_report
from tokenyard.governance.usage_writer import StoreWriter
from tokenyard.store import ConversationRow, Store, UsageRow

DAY1 = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
DAY2 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)


def entry(n: int, tenant: str, model: str, when: datetime, cost: str, text: str = "", **usage: Any) -> dict[str, Any]:
    fields: dict[str, Any] = dict(
        id=f"rec-{n}", request_id=f"req-{n}", created_at=when, tenant=tenant, key_prefix=f"ty-{tenant}",
        model=model, endpoint="/v1/chat/completions", status=200, prompt_tokens=10, completion_tokens=5,
        billed_completion_tokens=5, generated_tokens=5, delivered_tokens=5, calls_billed=1, cost=Decimal(cost),
    )  # fmt: skip
    record = UsageRecord(**(fields | usage))
    conversation = ConversationRecord(
        id=record.id, request_id=record.request_id, created_at=when, tenant=tenant, model=model,
        endpoint=record.endpoint, status=200, request={"messages": [{"role": "user", "content": text}]},
        outputs=[f"answer {n}"],
    )  # fmt: skip
    return {"usage": record.model_dump(mode="json"), "conversation": conversation.model_dump(mode="json")}


def batch() -> list[dict[str, Any]]:
    return [
        entry(1, "acme", "m1", DAY1, "0.100001", "北京天气怎么样"),
        entry(2, "acme", "m1", DAY2, "0.200002", "write 100% of the code"),
        entry(3, "acme", "m2", DAY2, "0.000003"),
        entry(4, "研发部", "m1", DAY2, "1.5"),
        entry(5, "acme", "m1", DAY2, "0", status=429, calls_billed=0, billed_completion_tokens=0),
    ]


def test_a_batch_written_twice_is_stored_and_rolled_up_once(store: Store) -> None:
    writer = StoreWriter(store)
    writer(batch())
    writer(batch()[1:] + batch())  # a replay after a crash, overlapping the first write
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(UsageRow)) == 5
        assert session.scalar(select(func.count()).select_from(ConversationRow)) == 5
    lines = usage_report(store, UsageQuery(tenant="acme", group_by="model"))
    assert [(x.group, x.requests, x.calls, x.cost) for x in lines] == [
        ("m1", 3, 2, Decimal("0.300003")),
        ("m2", 1, 1, Decimal("0.000003")),
    ]


def test_reports_by_day_and_key_with_dates_inclusive_and_a_finance_csv(store: Store) -> None:
    StoreWriter(store)(batch())
    by_day = usage_report(store, UsageQuery(group_by="day"))
    assert [(x.tenant, x.group, x.calls, x.prompt_tokens) for x in by_day] == [
        ("acme", "2026-11-30", 1, 10),
        ("acme", "2026-12-01", 2, 20),  # the refused call is a request, not a billed call
        ("研发部", "2026-12-01", 1, 10),
    ]
    only_day2 = usage_report(store, UsageQuery(since=date(2026, 12, 1), until=date(2026, 12, 1), group_by="key"))
    assert [(x.group, x.cost) for x in only_day2] == [("ty-acme", Decimal("0.200005")), ("ty-研发部", Decimal("1.5"))]
    csv_text = to_csv(only_day2, "key", "USD")
    assert csv_text.splitlines() == [
        "tenant,key,requests,calls,prompt_tokens,completion_tokens,cached_tokens,cost,currency",
        "acme,ty-acme,3,2,20,10,0,0.200005,USD",
        "研发部,ty-研发部,1,1,10,5,0,1.500000,USD",
    ]


def test_conversations_are_found_shown_and_exported(store: Store) -> None:
    StoreWriter(store)(batch())
    assert [c.id for c in list_conversations(store, ConversationFilter(contains="天气"))] == ["rec-1"]
    assert [c.id for c in list_conversations(store, ConversationFilter(contains="100%"))] == ["rec-2"]
    assert list_conversations(store, ConversationFilter(contains="_")) == []  # LIKE wildcards are literal
    newest = list_conversations(store, ConversationFilter(tenant="acme", model="m1"))
    assert [c.id for c in newest][:1] == ["rec-2"] or [c.id for c in newest][:1] == ["rec-5"]
    shown = get_conversation(store, "req-4")
    assert shown is not None and shown.tenant == "研发部" and shown.outputs == ["answer 4"]
    since = ConversationFilter(since=DAY2 - timedelta(hours=1))
    assert [r.id for r in export_conversations(store, since, page=2)] == ["rec-2", "rec-3", "rec-4", "rec-5"]


def test_retention_deletes_old_conversations_in_bounded_batches(store: Store) -> None:
    StoreWriter(store)([entry(100 + n, "acme", "m", DAY1 - timedelta(days=40), "0") for n in range(7)] + batch())
    removed = delete_older_than(store, days=30, batch=3, now=DAY2)
    assert removed == 7
    assert {c.id for c in list_conversations(store, ConversationFilter())} == {f"rec-{n}" for n in range(1, 6)}


def test_feedback_votes_and_a_later_vote_replaces_the_first(store: Store) -> None:
    record_feedback(store, "req-1", "acme", "up")
    assert feedback_of(store, "req-1", "acme") == 1
    record_feedback(store, "req-1", "acme", -1)
    assert feedback_of(store, "req-1", "acme") == -1
    assert feedback_of(store, "req-1", "other") is None


def test_a_nul_character_in_generated_text_is_stored(store: Store) -> None:
    poisoned = entry(7, "acme", "m1", DAY2, "0.1", "hi\x00there")
    poisoned["conversation"]["outputs"] = ["a\x00b"]
    StoreWriter(store)([poisoned])
    record = get_conversation(store, "rec-7")
    assert record is not None and record.outputs == ["a\x00b"]


def test_a_record_the_database_refuses_is_set_aside_and_the_rest_are_written(store: Store, tmp_path: Path) -> None:
    if store.kind == "sqlite":
        pytest.skip("SQLite stores strings of any length, so it refuses nothing here")
    refused = entry(8, "t" * 500, "m1", DAY2, "0.1")  # longer than the tenant column
    rejected = tmp_path / "rejected.jsonl"
    StoreWriter(store, rejected=rejected)([*batch(), refused])
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(UsageRow)) == 5
    assert [json.loads(line)["usage"]["id"] for line in rejected.read_text().splitlines()] == ["rec-8"]
