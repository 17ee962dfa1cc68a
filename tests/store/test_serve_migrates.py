"""`tokenyard serve` brings a SQLite store up to date itself before starting its children."""

from __future__ import annotations

from pathlib import Path

from tokenyard.config import Settings
from tokenyard.serve import migrate_sqlite
from tokenyard.store import Store, migrate


def test_serve_migrates_the_default_sqlite_store(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    migrate_sqlite(settings)
    store = Store(settings.database_url())
    try:
        assert migrate.schema_state(store.engine).is_current
        assert (tmp_path / "home" / "tokenyard.db").is_file()
    finally:
        store.close()
