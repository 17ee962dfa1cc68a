"""FastChat's model_worker flags on `tokenyard worker`: each lands on the same setting as ours."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

import tokenyard.worker.main
from tokenyard.cli import cli
from tokenyard.config import Settings


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """The settings `tokenyard worker` would run with (the worker itself is not started)."""
    seen: list[Settings] = []
    monkeypatch.setattr(tokenyard.worker.main, "run_worker", seen.append)
    for name in ("TOKENYARD_CONFIG", "TOKENYARD_WORKER__MODEL", "TOKENYARD_WORKER__CONTROLLER"):
        monkeypatch.delenv(name, raising=False)
    return seen


def _worker(started: list[Settings], *args: str) -> Settings:
    result = CliRunner().invoke(cli, ["worker", *args])
    assert result.exit_code == 0, result.output
    assert len(started) == 1
    return started[0]


def test_fastchat_flags_map_to_ours(started: list[Settings]) -> None:
    settings = _worker(
        started,
        "--model-path",
        "/models/vicuna-7b",
        "--controller-address",
        "http://ctrl:21001",
        "--worker-address",
        "http://gpu-3:31000",
        "--model-names",
        "vicuna-7b, gpt-3.5-turbo",
        "--num-gpus",
        "1",
    )
    worker = settings.worker
    assert worker.model == "/models/vicuna-7b"
    assert worker.controller == "http://ctrl:21001"
    assert worker.address() == "http://gpu-3:31000"
    assert worker.model_names == ["vicuna-7b", "gpt-3.5-turbo"]


@pytest.mark.parametrize("flag", ["--controller-url", "--controller-address", "--controller"])
def test_every_controller_spelling(started: list[Settings], flag: str) -> None:
    assert _worker(started, flag, "http://c:1").worker.controller == "http://c:1"


def test_model_name_and_model_names_combine(started: list[Settings]) -> None:
    settings = _worker(started, "--model-name", "a", "--model-names", "b,c")
    assert settings.worker.model_names == ["a", "b", "c"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tokenyard", *args], capture_output=True, text=True, timeout=60)


def test_several_gpus_refused_in_one_line_naming_the_flag() -> None:
    result = _run("worker", "--model-path", "x", "--num-gpus", "2")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "--num-gpus" in lines[0] and "one worker per GPU" in lines[0]


def test_help_lists_the_aliases() -> None:
    result = _run("worker", "--help")
    assert result.returncode == 0
    for alias in ("--model-path", "--controller-address", "--controller-url", "--worker-address", "--model-names"):
        assert alias in result.stdout


def test_server_commands_do_not_import_the_admin_commands() -> None:
    """`tokenyard worker` and friends never load the governance and store commands (SQLAlchemy's asyncio
    layer, redis): they are imported when one of them runs, and still listed in the help."""
    lazy = ("tokenyard.governance.command", "tokenyard.governance.report_command", "tokenyard.store.command")
    code = f"import sys, tokenyard.cli; print(sorted(m for m in sys.modules if m.startswith({lazy!r})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    result = CliRunner().invoke(cli, ["--help"])
    assert all(name in result.output for name in ("bench", "db", "keys", "tenants", "usage", "logs"))
