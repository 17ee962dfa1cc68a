"""The `auth` settings section: API keys on /v1, and how long verified keys are trusted."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_TENANT = "default"


class AuthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="/v1 needs a tenant's API key (Authorization: Bearer KEY)")
    default_tenant: str = Field(
        default=DEFAULT_TENANT, min_length=1, description="the tenant every request acts as while auth is off"
    )
    key_cache_seconds: float = Field(
        default=300.0,
        gt=0,
        description="a verified key is served from memory this long; while the database is away, known keys "
        "are served from memory for as long as the outage lasts",
    )
    revocation_poll_interval: float = Field(
        default=1.0,
        gt=0,
        le=1.0,
        description="seconds between checks of the store's change counter (without Redis)",
    )
