"""The store's schema version: run the migrations, and tell whether a database is current.

The Alembic scripts ship inside the package (store/migrations); there is no alembic.ini. A
gateway refuses to start on a schema older than its code (`require_current`); `tokenyard db
upgrade` and, on SQLite, `tokenyard serve` bring it up to date (`upgrade`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from tokenyard.errors import StoreError

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision this code knows; there is exactly one (a test keeps the chain linear)."""
    head = script_directory().get_current_head()
    assert head is not None, "the package ships no migrations"
    return head


@dataclass(frozen=True)
class SchemaState:
    current: str | None
    head: str

    @property
    def is_current(self) -> bool:
        return self.current == self.head


def schema_state(engine: Engine) -> SchemaState:
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return SchemaState(current=current, head=head_revision())


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply every migration up to `revision` in one transaction per step."""
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def require_current(engine: Engine, where: str) -> None:
    """Raise StoreError, saying to run `tokenyard db upgrade`, unless the schema matches the code."""
    try:
        state = schema_state(engine)
    except Exception as exc:
        raise StoreError(f"cannot read the schema version of {where}: {type(exc).__name__}: {exc}") from None
    if state.is_current:
        return
    if state.current is not None and not _is_known(state.current):
        raise StoreError(
            f"the database {where} has schema {state.current}, newer than this tokenyard ({state.head}); "
            "upgrade tokenyard"
        )
    found = state.current or "no schema"
    raise StoreError(
        f"the database {where} has {found}, older than this tokenyard's {state.head}: "
        "run `tokenyard db upgrade` (with the same --config) first"
    )


def _is_known(revision: str) -> bool:
    try:
        return script_directory().get_revision(revision) is not None
    except Exception:  # alembic raises its own errors for revisions it cannot resolve
        return False
