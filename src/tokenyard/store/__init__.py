"""The governance store: SQLAlchemy models, one Store object, Alembic migrations in the package.

See docs/security.md for what is stored (keys only as SHA-256 digests) and docs/configuration.md
for `database.url`.
"""

from tokenyard.store.models import ApiKey, Base, Counter, Tenant
from tokenyard.store.store import Store

__all__ = ["ApiKey", "Base", "Counter", "Store", "Tenant"]
