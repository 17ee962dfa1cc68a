"""The store's migrations: one linear chain, the same schema as the models, on every database kind."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select

from tokenyard.errors import StoreError
from tokenyard.store import ApiKey, Base, Store, Tenant, migrate


def test_one_head_and_a_linear_chain() -> None:
    scripts = migrate.script_directory()
    assert len(scripts.get_heads()) == 1, "two migrations share a parent: re-point down_revision to the head"
    revisions = list(scripts.walk_revisions())
    assert sum(1 for r in revisions if r.down_revision is None) == 1
    assert all(not isinstance(r.down_revision, tuple) for r in revisions)


def test_migrations_build_exactly_the_models(store: Store) -> None:
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
    assert migrate.schema_state(store.engine).is_current


def test_upgrade_twice_is_harmless(store: Store) -> None:
    store.upgrade()
    store.require_current_schema()
    assert {"tenants", "api_keys", "counters"} <= set(inspect(store.engine).get_table_names())


def test_an_empty_database_is_refused_with_the_command_to_run(database_url: str) -> None:
    store = Store(database_url)
    try:
        with pytest.raises(StoreError, match="tokenyard db upgrade"):
            store.require_current_schema()
    finally:
        store.close()


def test_an_older_schema_is_refused(database_url: str) -> None:
    store = Store(database_url)
    try:
        base = migrate.script_directory().get_base()
        assert base is not None
        migrate.upgrade(store.engine, base)
        if base != migrate.head_revision():
            with pytest.raises(StoreError, match="older than this tokenyard"):
                store.require_current_schema()
        store.upgrade()
        store.require_current_schema()
    finally:
        store.close()


def test_chinese_names_and_aware_timestamps_round_trip(store: Store) -> None:
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=8)))
    with store.session() as session:
        tenant = Tenant(name="研发部", models=["模型-a"], ip_allowlist=["10.0.0.0/8"])
        session.add(tenant)
        session.flush()
        session.add(ApiKey(prefix="ty-abc", key_hash="0" * 64, tenant_id=tenant.id, expires_at=expires))
    with store.session() as session:
        tenant = session.scalars(select(Tenant).where(Tenant.name == "研发部")).one()
        key = session.scalars(select(ApiKey)).one()
        assert tenant.models == ["模型-a"]
        assert key.expires_at == expires
        assert key.expires_at is not None and key.expires_at.tzinfo is not None
