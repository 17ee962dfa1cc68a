"""The one Store object an app holds: an engine, a session factory and the schema checks.

Governance code (tenants, keys, and later usage and logs) takes a Store and opens short
transactions with `store.session()`. The API is synchronous (PyMySQL has no async driver);
async callers run it in a thread and keep such calls rare (the gateway caches verified keys).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from sqlalchemy import Connection
from sqlalchemy.orm import Session, sessionmaker

from tokenyard.store import migrate
from tokenyard.store.engine import build_engine, normalise_url, safe_url


class Store:
    """One database: open transactions on it, migrate it, check its schema."""

    def __init__(self, url: str, pool_size: int = 5) -> None:
        self.url = normalise_url(url)
        self.engine = build_engine(url, pool_size)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite lets one writer in at a time and makes the others poll, sleeping 1, 2, 5, 10... ms
        # between tries; the writers of one process queue on this lock instead and wake at once.
        self._write_lock = threading.Lock() if self.kind == "sqlite" else None

    @property
    def kind(self) -> str:
        """'sqlite', 'postgresql' or 'mysql'."""
        return self.url.get_backend_name()

    def describe(self) -> str:
        """The URL with its password masked."""
        return safe_url(self.url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def write(self, autocommit: bool = False) -> Iterator[Connection]:
        """A Core transaction for the hot path's writes (quota counters, usage records): committed
        when the block ends, rolled back if it raises; on SQLite, one at a time in this process.
        `autocommit`: no transaction around the statements, each commits alone (for a single
        statement, which is atomic by itself: no BEGIN and COMMIT round trips)."""
        with self._write_lock or nullcontext():
            if autocommit:
                with self.engine.connect() as connection:
                    yield connection.execution_options(isolation_level="AUTOCOMMIT")
            else:
                with self.engine.begin() as connection:
                    yield connection

    def upgrade(self) -> None:
        migrate.upgrade(self.engine)

    def require_current_schema(self) -> None:
        migrate.require_current(self.engine, self.describe())

    def close(self) -> None:
        self.engine.dispose()
