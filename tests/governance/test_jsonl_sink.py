"""The Elasticsearch-bound JSON-lines sink: a file per UTC day, old days deleted, Chinese kept readable."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from tokenyard.governance.jsonl_sink import DailyJsonlSink


def test_records_go_to_the_file_of_their_utc_day(tmp_path: Path) -> None:
    sink = DailyJsonlSink(tmp_path, keep_days=100000)
    sink.write(
        [
            {"request_id": "a", "created_at": "2026-11-30T23:59:59+00:00", "outputs": ["你好"]},
            {"request_id": "b", "created_at": "2026-12-01T01:30:00+08:00"},  # 17:30 UTC the day before
            {"request_id": "c", "created_at": "2026-12-01T00:00:00+00:00"},
        ]
    )
    first = sink.path_for(date(2026, 11, 30)).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["request_id"] for line in first] == ["a", "b"]
    assert "你好" in first[0]  # not \\u-escaped: greppable, and what Filebeat ships
    second = sink.path_for(date(2026, 12, 1)).read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in second] == ["c"]


def test_days_past_keep_days_are_deleted(tmp_path: Path) -> None:
    sink = DailyJsonlSink(tmp_path, keep_days=7)
    for day in ("2026-11-20", "2026-11-24", "2026-11-30"):
        sink.path_for(date.fromisoformat(day)).write_text("{}\n")
    (tmp_path / "unrelated.jsonl").write_text("{}\n")
    removed = sink.expire(date(2026, 12, 1))
    assert [p.name for p in removed] == ["tokenyard-conversations-2026-11-20.jsonl"]
    assert (tmp_path / "unrelated.jsonl").exists()
    assert sink.path_for(date(2026, 11, 24)).exists()
