"""`tokenyard db upgrade`: bring the configured database to this code's schema."""

from __future__ import annotations

import click

from tokenyard.config import load_settings
from tokenyard.errors import StoreError
from tokenyard.store import migrate
from tokenyard.store.store import Store


@click.group()
def db() -> None:
    """The store's database (tenants, keys, usage, logs): schema migrations."""


@db.command()
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False), help="YAML settings file (or TOKENYARD_CONFIG)."
)
def upgrade(config_file: str | None) -> None:
    """Run the migrations up to this tokenyard's schema (safe to run again)."""
    settings = load_settings(config_file)
    store = Store(settings.database_url(), settings.database.pool_size)
    try:
        before = migrate.schema_state(store.engine).current
        store.upgrade()
        after = migrate.schema_state(store.engine).current
    except StoreError:
        raise
    except Exception as exc:  # unreachable server, bad credentials: one line, not a traceback
        raise StoreError(f"cannot upgrade {store.describe()}: {type(exc).__name__}: {exc}") from None
    finally:
        store.close()
    if before == after:
        click.echo(f"{store.describe()}: already at {after}")
    else:
        click.echo(f"{store.describe()}: upgraded from {before or 'an empty database'} to {after}")
