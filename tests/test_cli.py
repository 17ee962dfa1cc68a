"""The command line: help everywhere, one-line errors with exit code 2 for user mistakes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokenyard", *args], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.mark.parametrize("command", ["serve", "controller", "worker", "gateway", "status"])
def test_every_command_has_help(command: str) -> None:
    result = run(command, "--help")
    assert result.returncode == 0
    assert "Usage:" in result.stdout
    assert "--config" in result.stdout


def test_unknown_flag_exits_2_with_one_line_naming_it() -> None:
    result = run("worker", "--max-batch-sise", "4")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "--max-batch-sise" in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_flag_value_exits_2() -> None:
    result = run("controller", "--dispatch", "fastest")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--dispatch" in result.stderr


def test_bad_config_key_exits_2_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("worker:\n  max_batch_size: lots\n")
    result = run("worker", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "worker.max_batch_size" in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run("gateway", "--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert "absent.yaml" in result.stderr


def test_missing_model_is_one_line_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-model-here"
    env = {"PATH": "/usr/bin:/bin", "TOKENYARD_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    result = run("worker", "--model", str(missing), env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert str(missing) in lines[-1]


def test_status_cannot_reach_controller_is_one_line() -> None:
    result = run("status", "--controller", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "cannot reach the controller" in result.stderr
