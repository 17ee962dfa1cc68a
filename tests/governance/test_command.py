"""`tokenyard keys` and `tokenyard tenants` against a real database of each kind.

The flow runs in process (click's runner) on every kind; the exit codes of mistakes go through the
real entry point once, on SQLite (each process start costs seconds on a busy machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from click.testing import CliRunner, Result

from tokenyard.cli import cli
from tokenyard.governance.keys import KEY_LENGTH, PREFIX_LENGTH


def tokenyard(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it (a new process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENYARD_")}
    env["TOKENYARD_DATABASE__URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "tokenyard", *args], capture_output=True, text=True, timeout=60, env=env
    )


class InProcess:
    """The same command through click's runner, in this process."""

    def __init__(self, database_url: str) -> None:
        self.runner = CliRunner()
        self.env = {"TOKENYARD_DATABASE__URL": database_url, "TOKENYARD_REDIS__URL": None, "TOKENYARD_CONFIG": None}

    def __call__(self, *args: str) -> Result:
        return self.runner.invoke(cli, list(args), env=self.env)


def test_keys_and_tenants_from_the_shell(store_url: str) -> None:
    run = InProcess(store_url)
    created = run("keys", "create", "--tenant", "研发", "--models", "a,b", "--rpm", "5", "--format", "json")
    assert created.exit_code == 0, created.stderr
    record = json.loads(created.stdout)
    assert set(record) == {"key", "prefix", "tenant", "models"}
    assert (record["tenant"], record["models"], len(record["key"])) == ("研发", ["a", "b"], KEY_LENGTH)

    text = run("keys", "create", "--tenant", "研发", "--ip-allow", "10.0.0.0/8,2001:db8::/32")
    key = text.stdout.strip()
    assert key.startswith("ty-") and len(key) == KEY_LENGTH and key[:PREFIX_LENGTH] in text.stderr

    listed = run("keys", "list", "--tenant", "研发", "--format", "json")
    rows = json.loads(listed.stdout)
    assert [r["prefix"] for r in rows] == [record["prefix"], key[:PREFIX_LENGTH]]
    assert record["key"] not in listed.stdout and key not in listed.stdout
    assert key[PREFIX_LENGTH:] not in run("keys", "list").stdout

    assert run("keys", "revoke", record["prefix"]).exit_code == 0
    states = {r["prefix"]: r["state"] for r in json.loads(run("keys", "list", "--format", "json").stdout)}
    assert states == {record["prefix"]: "revoked", key[:PREFIX_LENGTH]: "active"}

    assert run("tenants", "set", "研发", "--tpm", "900", "--ip-allow", "::1").exit_code == 0
    tenants = json.loads(run("tenants", "list", "--format", "json").stdout)
    assert [(t["name"], t["tpm"], t["ip_allowlist"]) for t in tenants] == [("研发", 900, ["::1/128"])]


def test_mistakes_are_one_line(sqlite_url: str) -> None:
    store_url = sqlite_url
    missing = tokenyard(store_url, "keys", "revoke", "ty-nothere")
    assert missing.returncode == 1 and "ty-nothere" in missing.stderr and "Traceback" not in missing.stderr
    bad_cidr = tokenyard(store_url, "keys", "create", "--tenant", "t", "--ip-allow", "10.0.0.0/99")
    assert bad_cidr.returncode == 1 and "10.0.0.0/99" in bad_cidr.stderr
    assert len(bad_cidr.stderr.strip().splitlines()) == 1
    bad_flag = tokenyard(store_url, "keys", "create", "--tenant", "t", "--rpm", "lots")
    assert bad_flag.returncode == 2 and "--rpm" in bad_flag.stderr
    exists = tokenyard(store_url, "tenants", "create", "t2")
    again = tokenyard(store_url, "tenants", "create", "t2")
    assert exists.returncode == 0 and again.returncode == 1 and "already exists" in again.stderr
