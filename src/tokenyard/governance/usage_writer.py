"""The journal's sink: usage records, their daily rollups and conversations into the database.

One batch is one transaction, with one multi-row INSERT per table (SQLAlchemy Core: no ORM unit of
work for rows that are only ever inserted). Records whose id is already stored are skipped (the
journal delivers at least once), and only the records actually inserted are added to the rollups,
so a replayed batch changes nothing. Rollup rows are shared by every gateway and updated with the database's
own upsert (INSERT ... ON CONFLICT DO UPDATE, or ON DUPLICATE KEY UPDATE on MySQL/MariaDB), which
adds atomically even when two gateways write the same tenant, model and day at once.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import DataError, IntegrityError

from tokenyard.governance.jsonl_sink import DailyJsonlSink
from tokenyard.governance.quotas import to_micros
from tokenyard.governance.records import ConversationRecord, UsageRecord
from tokenyard.store import ConversationRow, Store, UsageDaily, UsageRow

logger = logging.getLogger(__name__)
REFUSED = (DataError, IntegrityError, ValueError)  # the record's content, not the database's health
ROLLUP_KEY = ("day", "tenant", "model", "key_prefix")
ROLLUP_SUMS = (
    "requests",
    "calls",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "generated_tokens",
    "cost_micros",
)


def usage_row(record: UsageRecord) -> dict[str, Any]:
    """The usage_records row of a record."""
    return record.model_dump(exclude={"cost"}) | {"cost_micros": to_micros(record.cost)}


def conversation_row(record: ConversationRecord) -> dict[str, Any]:
    """The conversation_logs row of a record."""
    return {
        "id": record.id,
        "request_id": record.request_id,
        "created_at": record.created_at,
        "tenant": record.tenant,
        "key_prefix": record.key_prefix,
        "model": record.model,
        "worker": record.worker,
        "endpoint": record.endpoint,
        "status": record.status,
        "store_content": record.store_content,
        "record": record.model_dump(mode="json"),
        # PostgreSQL's text cannot hold NUL, which a model may well generate.
        "search_text": record.searchable_text().replace("\x00", "\ufffd") if record.store_content == "full" else "",
    }


def rollups(records: Iterable[UsageRecord]) -> dict[tuple[date, str, str, str], dict[str, int]]:
    """The records summed per UTC day, tenant, model and key."""
    sums: dict[tuple[date, str, str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(ROLLUP_SUMS, 0))
    for r in records:
        row = sums[(r.created_at.date(), r.tenant, r.model, r.key_prefix)]
        row["requests"] += 1
        row["calls"] += r.calls_billed
        row["prompt_tokens"] += r.prompt_tokens if r.calls_billed else 0
        row["completion_tokens"] += r.billed_completion_tokens
        row["cached_tokens"] += r.cached_tokens if r.calls_billed else 0
        row["generated_tokens"] += r.generated_tokens
        row["cost_micros"] += to_micros(r.cost)
    return sums


def add_to_rollup(connection: Connection, key: tuple[date, str, str, str], sums: dict[str, int]) -> None:
    values: dict[str, Any] = dict(zip(ROLLUP_KEY, key, strict=True)) | sums
    if connection.dialect.name == "mysql":
        upsert_mysql = mysql.insert(UsageDaily).values(**values)
        added = {c: getattr(UsageDaily, c) + upsert_mysql.inserted[c] for c in ROLLUP_SUMS}
        connection.execute(upsert_mysql.on_duplicate_key_update(added))
        return
    dialect_insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    upsert = dialect_insert(UsageDaily).values(**values)
    added = {c: getattr(UsageDaily, c) + upsert.excluded[c] for c in ROLLUP_SUMS}
    connection.execute(upsert.on_conflict_do_update(index_elements=list(ROLLUP_KEY), set_=added))


class StoreWriter:
    """Called by the journal pipeline (in a thread) with a batch of journal entries.

    An unreachable database raises, and the pipeline retries the batch later. An entry the
    database refuses for its content (a data or integrity error) must not block the journal for
    ever: the batch is then written entry by entry, and an entry refused alone is set aside in
    `rejected` (a JSON-lines file beside the journal) with an error in the log.
    """

    def __init__(self, store: Store, jsonl: DailyJsonlSink | None = None, rejected: Path | None = None) -> None:
        self.store = store
        self.jsonl = jsonl
        self.rejected = rejected

    def __call__(self, entries: list[dict[str, Any]]) -> None:
        try:
            self.write(entries)
        except REFUSED:
            for entry in entries:
                try:
                    self.write([entry])
                except REFUSED as exc:
                    self._set_aside(entry, exc)

    def _set_aside(self, entry: dict[str, Any], error: Exception) -> None:
        logger.error("the database refused a record (%s); kept in %s", str(error).splitlines()[0], self.rejected)
        if self.rejected is None:
            return
        with self.rejected.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def write(self, entries: list[dict[str, Any]]) -> None:
        usage = _unique(UsageRecord.model_validate(e["usage"]) for e in entries if e.get("usage"))
        conversations = _unique(
            ConversationRecord.model_validate(e["conversation"]) for e in entries if e.get("conversation")
        )
        # The rows are built before the transaction: it holds the database's write lock on SQLite.
        usage_rows = {r.id: usage_row(r) for r in usage}
        conversation_rows = {r.id: conversation_row(r) for r in conversations}
        with self.store.write() as connection:
            new_usage = _not_stored(connection, UsageRow, usage)
            if new_usage:
                connection.execute(insert(UsageRow), [usage_rows[r.id] for r in new_usage])
            for key, sums in sorted(rollups(new_usage).items()):  # a fixed order: no deadlock between gateways
                add_to_rollup(connection, key, sums)
            if new_conversations := _not_stored(connection, ConversationRow, conversations):
                connection.execute(insert(ConversationRow), [conversation_rows[r.id] for r in new_conversations])
        if self.jsonl is not None and conversations:
            self.jsonl.write([r.model_dump(mode="json") for r in conversations])


def _unique(records: Iterable[Any]) -> list[Any]:
    seen: dict[str, Any] = {}
    for record in records:
        seen.setdefault(record.id, record)
    return list(seen.values())


def _not_stored(connection: Connection, table: type[UsageRow] | type[ConversationRow], records: list[Any]) -> list[Any]:
    if not records:
        return []
    stored = set(connection.scalars(select(table.id).where(table.id.in_([r.id for r in records]))))
    return [r for r in records if r.id not in stored]
