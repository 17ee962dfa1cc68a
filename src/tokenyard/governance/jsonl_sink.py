"""Conversation records as JSON lines, one file a day, for Filebeat or Fluent Bit to ship to Elasticsearch.

Files are named `PREFIX-YYYY-MM-DD.jsonl` after each record's UTC day, so a day's file is closed for
good once the day is over, and files older than `keep_days` are deleted. The lines have the same
shape as the database's conversation records; the writer is fed from the journal, so a line may be
written twice after a crash: the shipper configs in deploy/logging use the record id as the
Elasticsearch document id, which makes the second copy overwrite the first.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

DEFAULT_PREFIX = "tokenyard-conversations"


class DailyJsonlSink:
    def __init__(self, directory: Path, keep_days: int = 14, prefix: str = DEFAULT_PREFIX) -> None:
        self.directory = directory
        self.keep_days = keep_days
        self.prefix = prefix
        directory.mkdir(parents=True, exist_ok=True)

    def path_for(self, day: date) -> Path:
        return self.directory / f"{self.prefix}-{day.isoformat()}.jsonl"

    def write(self, records: list[dict[str, Any]]) -> None:
        """Append each record to its day's file (fsync'd), then delete files past `keep_days`."""
        by_day: dict[date, list[bytes]] = defaultdict(list)
        for record in records:
            by_day[_day_of(record)].append(
                json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str).encode() + b"\n"
            )
        for day, lines in sorted(by_day.items()):
            with self.path_for(day).open("ab") as handle:
                handle.write(b"".join(lines))
                handle.flush()
                os.fsync(handle.fileno())
        self.expire(datetime.now(timezone.utc).date())

    def expire(self, today: date) -> list[Path]:
        """Delete the files of days older than `keep_days` before `today`."""
        oldest = today - timedelta(days=self.keep_days)
        removed = []
        for path in self.directory.glob(f"{self.prefix}-*.jsonl"):
            try:
                day = date.fromisoformat(path.stem[len(self.prefix) + 1 :])
            except ValueError:
                continue
            if day < oldest:
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed


def _day_of(record: dict[str, Any]) -> date:
    stamp = record.get("created_at")
    if isinstance(stamp, str):
        try:
            return datetime.fromisoformat(stamp).astimezone(timezone.utc).date()
        except ValueError:
            pass
    return datetime.now(timezone.utc).date()
