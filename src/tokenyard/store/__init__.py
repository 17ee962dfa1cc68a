"""The governance store: SQLAlchemy models, one Store object, Alembic migrations in the package.

See docs/security.md for what is stored (keys only as SHA-256 digests) and docs/configuration.md
for `database.url`.
"""

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
