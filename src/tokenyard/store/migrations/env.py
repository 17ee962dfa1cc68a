"""Alembic's environment for the store: runs on the connection tokenyard hands it.

Started only through tokenyard.store.migrate (never the `alembic` command), which passes an open
connection in `config.attributes["connection"]`. SQLite gets batch mode, since it cannot alter
most of a table in place.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from tokenyard.store import Base  # the package loads every model module: the metadata knows every table


def run_migrations_online() -> None:
    connection: Connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("tokenyard runs its migrations online only: use `tokenyard db upgrade`")
run_migrations_online()
