"""Stored conversations: find, read, export, expire, and the feedback votes cast on them.

Plain functions on a Store, shared by `tokenyard logs ...`, the admin API and the web UI's feedback.
Retention deletes in bounded batches (ids first, then a DELETE by those ids), so no statement
locks the whole table or runs long while gateways keep inserting.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from pydantic import BaseModel
from sqlalchemy import ColumnElement, delete, or_, select

from tokenyard.errors import InvalidRequestError
from tokenyard.governance.records import ConversationRecord
from tokenyard.store import ConversationRow, FeedbackRow, Store
from tokenyard.store.models import utcnow

PREVIEW_CHARS = 60
VOTES = {"up": 1, "down": -1, 1: 1, -1: -1}


class ConversationSummary(BaseModel):
    """One line of `logs list`."""

    id: str
    request_id: str
    created_at: datetime
    tenant: str
    model: str
    status: int
    store_content: str
    preview: str


class ConversationFilter(BaseModel):
    tenant: str | None = None
    model: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    contains: str | None = None


def _where(filters: ConversationFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.tenant is not None:
        conditions.append(ConversationRow.tenant == filters.tenant)
    if filters.model is not None:
        conditions.append(ConversationRow.model == filters.model)
    if filters.since is not None:
        conditions.append(ConversationRow.created_at >= filters.since)
    if filters.until is not None:
        conditions.append(ConversationRow.created_at < filters.until)
    if filters.contains:
        conditions.append(ConversationRow.search_text.icontains(filters.contains, autoescape=True))
    return conditions


def list_conversations(store: Store, filters: ConversationFilter, limit: int = 100) -> list[ConversationSummary]:
    """The newest first, at most `limit`."""
    query = select(ConversationRow).where(*_where(filters)).order_by(ConversationRow.created_at.desc()).limit(limit)
    with store.session() as session:
        rows = session.scalars(query).all()
        return [_summary(row) for row in rows]


def _summary(row: ConversationRow) -> ConversationSummary:
    outputs = row.record.get("outputs") or [""]
    preview = " ".join(str(outputs[0]).split())[:PREVIEW_CHARS]
    return ConversationSummary(
        id=row.id,
        request_id=row.request_id,
        created_at=row.created_at,
        tenant=row.tenant,
        model=row.model,
        status=row.status,
        store_content=row.store_content,
        preview=preview,
    )


def get_conversation(store: Store, ident: str) -> ConversationRecord | None:
    """By record id, or else by request id (the newest with it)."""
    query = (
        select(ConversationRow)
        .where(or_(ConversationRow.id == ident, ConversationRow.request_id == ident))
        .order_by((ConversationRow.id == ident).desc(), ConversationRow.created_at.desc())
        .limit(1)
    )
    with store.session() as session:
        row = session.scalars(query).first()
        return None if row is None else ConversationRecord.model_validate(row.record)


def export_conversations(store: Store, filters: ConversationFilter, page: int = 500) -> Iterator[ConversationRecord]:
    """Every matching record, oldest first, read a page at a time (keyset paging on created_at, id)."""
    after: tuple[datetime, str] | None = None
    while True:
        query = select(ConversationRow).where(*_where(filters))
        if after is not None:
            query = query.where(
                or_(
                    ConversationRow.created_at > after[0],
                    (ConversationRow.created_at == after[0]) & (ConversationRow.id > after[1]),
                )
            )
        query = query.order_by(ConversationRow.created_at, ConversationRow.id).limit(page)
        with store.session() as session:
            rows = session.scalars(query).all()
            records = [ConversationRecord.model_validate(row.record) for row in rows]
            if rows:
                after = (rows[-1].created_at, rows[-1].id)
        yield from records
        if len(records) < page:
            return


def delete_older_than(store: Store, days: int, batch: int = 1000, now: datetime | None = None) -> int:
    """Delete conversations older than `days`, `batch` rows per statement; returns how many went."""
    cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=days)
    removed = 0
    while True:
        with store.session() as session:
            ids = list(
                session.scalars(select(ConversationRow.id).where(ConversationRow.created_at < cutoff).limit(batch))
            )
            if ids:
                session.execute(delete(ConversationRow).where(ConversationRow.id.in_(ids)))
        removed += len(ids)
        if len(ids) < batch:
            return removed


def record_feedback(store: Store, request_id: str, tenant: str, vote: int | str) -> None:
    """A thumbs up (1, "up") or down (-1, "down") on a conversation; a later vote replaces the earlier."""
    value = VOTES.get(vote)
    if value is None:
        raise InvalidRequestError("vote must be 'up' or 'down' (1 or -1).", param="vote")
    with store.session() as session:
        row = session.scalars(
            select(FeedbackRow).where(FeedbackRow.request_id == request_id, FeedbackRow.tenant == tenant)
        ).first()
        if row is None:
            session.add(FeedbackRow(request_id=request_id, tenant=tenant, vote=value, created_at=utcnow()))
        else:
            row.vote, row.created_at = value, utcnow()


def feedback_of(store: Store, request_id: str, tenant: str) -> int | None:
    with store.session() as session:
        return session.scalars(
            select(FeedbackRow.vote).where(FeedbackRow.request_id == request_id, FeedbackRow.tenant == tenant)
        ).first()
