"""Who a request acts as: the tenant, the key, and what they may use.

The gateway's auth middleware puts one `Principal` on `request.state.principal` for every /v1
request; later layers (rate limits, the word filter, metering, dispatch) read the tenant and the
limits from it and never look at the raw key. With auth off every request is the configured
default tenant (`auth.default_tenant`, "default") with no key, every model and no limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokenyard.governance.config import DEFAULT_TENANT


@dataclass(frozen=True)
class Limits:
    """Requests per minute, tokens per minute (prompt plus max_tokens) and parallel requests; None: no limit."""

    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None

    def any(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.max_parallel is not None


@dataclass(frozen=True)
class Principal:
    """One request's identity and rights, resolved from its API key (or the default tenant)."""

    tenant: str
    key_prefix: str | None = None
    models: frozenset[str] | None = None  # None: every model the cluster serves
    key_limits: Limits = field(default_factory=Limits)
    tenant_limits: Limits = field(default_factory=Limits)
    key_networks: tuple[str, ...] = ()  # CIDRs; empty: no restriction at this level
    tenant_networks: tuple[str, ...] = ()

    @property
    def authenticated(self) -> bool:
        return self.key_prefix is not None

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models

    def log_fields(self) -> dict[str, Any]:
        """What a log line or a metric may say about the caller: never the key, only its prefix."""
        return {"tenant": self.tenant, "key": self.key_prefix}


def anonymous(tenant: str = DEFAULT_TENANT) -> Principal:
    """The principal of every request while auth is off."""
    return Principal(tenant=tenant)
