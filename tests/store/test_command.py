"""`tokenyard db upgrade`, and the gateway refusing a database older than its code."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.integration.processes import free_port
from tokenyard.store import Store, migrate


def run(*args: str, database_url: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENYARD_")}
    env.update(TOKENYARD_DATABASE__URL=database_url, **extra)
    return subprocess.run(
        [sys.executable, "-m", "tokenyard", *args], capture_output=True, text=True, timeout=60, env=env
    )


def test_gateway_refuses_an_old_schema_then_db_upgrade_fixes_it(database_url: str) -> None:
    port = str(free_port())
    refused = run("gateway", "--port", port, database_url=database_url, TOKENYARD_AUTH__ENABLED="true")
    assert refused.returncode == 1
    assert "tokenyard db upgrade" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    upgraded = run("db", "upgrade", database_url=database_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert migrate.head_revision() in upgraded.stdout
    store = Store(database_url)
    try:
        store.require_current_schema()
    finally:
        store.close()
    again = run("db", "upgrade", database_url=database_url)
    assert again.returncode == 0 and "already at" in again.stdout


def test_unreachable_database_is_one_line() -> None:
    result = run("db", "upgrade", database_url="postgresql+psycopg://nobody:secret-pw@127.0.0.1:1/none")
    assert result.returncode == 1
    assert "cannot upgrade" in result.stderr and "Traceback" not in result.stderr
    assert "secret-pw" not in result.stderr
