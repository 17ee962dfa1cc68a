"""Engine creation for the three kinds of database the store supports.

SQLite (the default, one host), PostgreSQL through psycopg 3 and MySQL/MariaDB through PyMySQL.
Bare `postgresql://` and `mysql://`/`mariadb://` URLs are given those drivers, the only ones
tokenyard installs. Passwords never reach a log line: URLs are rendered with SQLAlchemy's masking.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError

from tokenyard.errors import ConfigError

DRIVERS = {
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mysql+pymysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "mariadb+pymysql": "mysql+pymysql",
}
SQLITE_BUSY_TIMEOUT_MS = 30_000  # several processes (gateways, the CLI) share one SQLite file
IDLE_PING_SECONDS = 2.0  # a pooled connection idle longer than this is checked before it is used


def normalise_url(url: str) -> URL:
    """Parse `url` and give it the driver tokenyard ships; ConfigError names what is wrong."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError("database.url: not a database URL (e.g. sqlite:///path, postgresql+psycopg://...)") from None
    driver = DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ConfigError(
            f"database.url: unsupported driver {parsed.drivername!r}; use sqlite, postgresql+psycopg or mysql+pymysql"
        )
    parsed = parsed.set(drivername=driver)
    if driver == "mysql+pymysql" and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})  # Chinese text needs 4-byte UTF-8
    return parsed


def safe_url(url: URL) -> str:
    """The URL with its password masked, for messages and logs."""
    return url.render_as_string(hide_password=True)


def build_engine(url: str, pool_size: int = 5) -> Engine:
    """A SQLAlchemy engine for `url`, tuned for the kind of database it names."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    engine = create_engine(parsed, pool_recycle=1800, pool_size=pool_size)
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use when it has sat idle for IDLE_PING_SECONDS, and get a
    fresh one if the server dropped it (a restart, a proxy's idle timeout).

    SQLAlchemy's `pool_pre_ping` pings on every checkout: one more round trip for each of the short
    transactions on the gateway's hot path (a quota reservation is one UPDATE). A connection used a
    moment ago is almost always alive; if it is not, its statement fails as a disconnect, SQLAlchemy
    discards it, and the callers on the hot path retry (quotas) or keep the work queued (the journal)."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(f"stale pooled connection: {exc}") from exc
        if not alive:
            raise DisconnectionError("stale pooled connection")


def _sqlite_engine(url: URL) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        if url.database and url.database != ":memory:":
            cursor.execute("PRAGMA journal_mode=WAL")  # readers (gateways) never wait on the CLI's writes
        cursor.close()

    return engine
