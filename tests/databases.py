"""Databases for tests: SQLite always, the real PostgreSQL and MariaDB when their servers answer.

Several people run tests at once against the same servers, so every database made here has its
own name (`ty_<random hex>`) and is dropped when its test ends. A server that does not answer
skips the tests that need it, with the reason. Server addresses can be changed with
TOKENYARD_TEST_POSTGRES_URL and TOKENYARD_TEST_MARIADB_URL (an admin URL on an existing database).

Use the `database_url` fixture (parametrised over the three kinds) or `sqlite_url`, and the
`store` fixture for a migrated Store on each kind.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from tokenyard.store import Store

DATABASE_KINDS = ("sqlite", "postgresql", "mariadb")
ADMIN_URLS = {
    "postgresql": os.environ.get("TOKENYARD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mariadb": os.environ.get("TOKENYARD_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
CONNECT_TIMEOUT = 3


class ServerDatabases:
    """Creates and drops uniquely named databases on one server."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.admin_url = make_url(ADMIN_URLS[kind])
        timeout = {"connect_timeout": CONNECT_TIMEOUT}
        self.admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT", connect_args=timeout)

    def check(self) -> str | None:
        """None if the server answers, else why not."""
        try:
            with self.admin.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:
            return f"{self.kind} not reachable at {self.admin_url.render_as_string()}: {type(exc).__name__}"
        return None

    def create(self) -> URL:
        name = f"ty_{secrets.token_hex(6)}"
        charset = " CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci" if self.kind == "mariadb" else ""
        with self.admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}{charset}"))
        return self.admin_url.set(database=name)

    def drop(self, url: URL) -> None:
        force = " WITH (FORCE)" if self.kind == "postgresql" else ""
        with self.admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {url.database}{force}"))

    def close(self) -> None:
        self.admin.dispose()


@pytest.fixture(scope="session")
def server_databases() -> Iterator[dict[str, ServerDatabases | str]]:
    """Per server kind: its ServerDatabases, or the reason it is unavailable."""
    found: dict[str, ServerDatabases | str] = {}
    for kind in ("postgresql", "mariadb"):
        server = ServerDatabases(kind)
        problem = server.check()
        found[kind] = problem or server
    yield found
    for server in found.values():
        if isinstance(server, ServerDatabases):
            server.close()


def _new_url(kind: str, servers: dict[str, ServerDatabases | str], tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    server = servers[kind]
    if isinstance(server, str):
        pytest.skip(server)
    url = server.create()
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        server.drop(url)


@pytest.fixture(params=DATABASE_KINDS)
def database_url(
    request: pytest.FixtureRequest, server_databases: dict[str, ServerDatabases | str], tmp_path: Path
) -> Iterator[str]:
    """The URL of a new, empty database of each kind; dropped after the test."""
    yield from _new_url(request.param, server_databases, tmp_path)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def store_url(database_url: str) -> str:
    """A new database of each kind, migrated to the newest schema (for tests that start processes)."""
    opened = Store(database_url)
    try:
        opened.upgrade()
    finally:
        opened.close()
    return database_url


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """A Store on a new database of each kind, migrated to the newest schema."""
    opened = Store(database_url)
    opened.upgrade()
    try:
        yield opened
    finally:
        opened.close()


REDIS_URL = os.environ.get("TOKENYARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own on the real Redis (skipped if absent); its keys deleted after."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=CONNECT_TIMEOUT)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        pytest.skip(f"redis not reachable at {REDIS_URL}: {type(exc).__name__}")
    prefix = f"ty-test-{secrets.token_hex(6)}:"
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
