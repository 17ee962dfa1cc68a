"""The `metering` and `logs` settings sections (prices are in `billing`, governance/billing.py)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tokenyard.governance.records import StoreContent


class MeteringConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=False,
        description="a usage record per call, daily rollups and quotas; on as well whenever auth or logs are",
    )
    quotas: bool = Field(default=True, description="enforce the tenants' and keys' quotas while metering is on")
    journal_dir: Path | None = Field(default=None, description="the local journal; default HOME/journal/gateway-PORT")
    batch_size: int = Field(default=500, ge=1, description="records per database transaction")
    drain_timeout: float = Field(
        default=10.0, ge=0, description="seconds a stopping gateway spends emptying the journal"
    )


class LogsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="conversations stored in the database")
    store_content: StoreContent = Field(
        default="full", description="full: text kept; hash: SHA-256 of each text; none: parameters and usage only"
    )
    tenants: dict[str, StoreContent] = Field(default_factory=dict, description="store_content per tenant")
    retention_days: int | None = Field(default=None, ge=1, description="conversations older than this are deleted")
    retention_batch: int = Field(default=1000, ge=1, description="rows deleted per statement (no table-wide lock)")
    jsonl_dir: Path | None = Field(
        default=None, description="also write conversations as JSON lines here, one file a day (for Elasticsearch)"
    )
    jsonl_keep_days: int = Field(default=14, ge=1, description="days of JSON-lines files kept")

    def content_policy(self, tenant: str | None) -> StoreContent:
        return self.tenants.get(tenant or "", self.store_content)
