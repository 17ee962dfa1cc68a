"""Metering's tables: usage records, daily rollups, quotas and their counters, conversations, feedback.

Money is stored as whole micro-units (`cost_micros`, 10^-6 of the billing currency) in BIGINT
columns: exact on every database (SQLite has no exact decimal type) and exact when summed. Record
ids are the gateway's own per-request ids (a fresh UUID per call, unique across gateways), so a
record replayed from the journal is stored once, and two clients that send the same X-Request-ID
(kept in `request_id`, searchable) never overwrite each other's records.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Date, Index, Integer, SmallInteger, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tokenyard.store.models import Base, UTCDateTime, utcnow

ID_LENGTH = 40
REQUEST_ID_LENGTH = 128
NAME_LENGTH = 128


class UsageRow(Base):
    """One call, as billed."""

    __tablename__ = "usage_records"
    __table_args__ = (Index("ix_usage_records_tenant_created_at", "tenant", "created_at"),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(REQUEST_ID_LENGTH), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    tenant: Mapped[str] = mapped_column(String(NAME_LENGTH))
    key_prefix: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(NAME_LENGTH))
    worker: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    endpoint: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(SmallInteger)
    stream: Mapped[bool] = mapped_column(Boolean)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    cached_tokens: Mapped[int] = mapped_column(Integer)
    generated_tokens: Mapped[int] = mapped_column(Integer)
    delivered_tokens: Mapped[int] = mapped_column(Integer)
    billed_completion_tokens: Mapped[int] = mapped_column(Integer)
    calls_billed: Mapped[int] = mapped_column(SmallInteger)
    cost_micros: Mapped[int] = mapped_column(BigInteger)
    latency_ms: Mapped[int] = mapped_column(Integer)
    ttft_ms: Mapped[int | None] = mapped_column(Integer)
    finish_reason: Mapped[str | None] = mapped_column(String(64))
    filter_actions: Mapped[list[Any]] = mapped_column(JSON)


class UsageDaily(Base):
    """Per UTC day, tenant, model and key: what reports read (never the raw records)."""

    __tablename__ = "usage_daily"
    __table_args__ = (UniqueConstraint("day", "tenant", "model", "key_prefix", name="uq_usage_daily_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    day: Mapped[date] = mapped_column(Date)
    tenant: Mapped[str] = mapped_column(String(NAME_LENGTH))
    model: Mapped[str] = mapped_column(String(NAME_LENGTH))
    key_prefix: Mapped[str] = mapped_column(String(32))
    requests: Mapped[int] = mapped_column(BigInteger, doc="every recorded call, errors included")
    calls: Mapped[int] = mapped_column(BigInteger, doc="billed calls")
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, doc="billed completion tokens")
    cached_tokens: Mapped[int] = mapped_column(BigInteger)
    generated_tokens: Mapped[int] = mapped_column(BigInteger)
    cost_micros: Mapped[int] = mapped_column(BigInteger)


class QuotaRow(Base):
    """A quota on a tenant or a key: calls, tokens and/or cost per day or month (None: no limit)."""

    __tablename__ = "quotas"
    __table_args__ = (UniqueConstraint("scope", "subject", name="uq_quotas_scope_subject"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(8), doc="'tenant' or 'key'")
    subject: Mapped[str] = mapped_column(String(NAME_LENGTH), doc="tenant name or key prefix")
    period: Mapped[str] = mapped_column(String(8), doc="'day' or 'month' (UTC)")
    max_calls: Mapped[int | None] = mapped_column(BigInteger)
    max_tokens: Mapped[int | None] = mapped_column(BigInteger)
    max_cost_micros: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class QuotaCounter(Base):
    """What a tenant or key has used (settled) or holds (reserved) in one period."""

    __tablename__ = "quota_counters"
    __table_args__ = (UniqueConstraint("scope", "subject", "period_start", name="uq_quota_counters_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(8))
    subject: Mapped[str] = mapped_column(String(NAME_LENGTH))
    period_start: Mapped[str] = mapped_column(String(10), doc="'2026-12-01' (day) or '2026-12' (month)")
    calls: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)


class ConversationRow(Base):
    """A stored exchange (logs.enabled); content per the tenant's logs.store_content."""

    __tablename__ = "conversation_logs"
    __table_args__ = (Index("ix_conversation_logs_tenant_created_at", "tenant", "created_at"),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(REQUEST_ID_LENGTH), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    tenant: Mapped[str] = mapped_column(String(NAME_LENGTH))
    key_prefix: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(NAME_LENGTH))
    worker: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    endpoint: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(SmallInteger)
    store_content: Mapped[str] = mapped_column(String(8))
    record: Mapped[dict[str, Any]] = mapped_column(JSON, doc="the whole ConversationRecord")
    search_text: Mapped[str] = mapped_column(Text, doc="request and answer text for --contains; empty unless full")


class FeedbackRow(Base):
    """A thumbs up (+1) or down (-1) on a stored conversation; the last vote counts."""

    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("request_id", "tenant", name="uq_feedback_request_tenant"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(REQUEST_ID_LENGTH))
    tenant: Mapped[str] = mapped_column(String(NAME_LENGTH))
    vote: Mapped[int] = mapped_column(SmallInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
