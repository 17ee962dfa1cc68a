"""The governance store: SQLAlchemy models, one Store object, Alembic migrations in the package.

See docs/security.md for what is stored (keys only as SHA-256 digests) and docs/configuration.md
for `database.url`.

The names below are imported on first use (PEP 562), not with the package: every service reads its
settings through `tokenyard.config`, which needs only `store.config`, and SQLAlchemy with the models
and Alembic would add ~29 MiB to processes that never open the store, the workers among them
(docs/engine.md, "Sizing memory").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenyard.store.models import ApiKey, Base, Counter, Tenant
    from tokenyard.store.store import Store
    from tokenyard.store.usage_models import (
        ConversationRow,
        FeedbackRow,
        QuotaCounter,
        QuotaRow,
        UsageDaily,
        UsageRow,
    )

__all__ = [
    "ApiKey",
    "Base",
    "ConversationRow",
    "Counter",
    "FeedbackRow",
    "QuotaCounter",
    "QuotaRow",
    "Store",
    "Tenant",
    "UsageDaily",
    "UsageRow",
]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # All three together, as the package imported them: `Base.metadata` must know every table.
    from tokenyard.store import models, store, usage_models

    return next(getattr(module, name) for module in (models, store, usage_models) if hasattr(module, name))
