"""`tokenyard bench` flags: help, and one-line exit-2 errors for bad values (no server needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokenyard", "bench", *args], capture_output=True, text=True, timeout=60
    )


def test_help_lists_the_contract_flags() -> None:
    result = bench("--help")
    assert result.returncode == 0
    for flag in ("--url", "--model", "--concurrency", "--requests", "--max-tokens", "--format"):
        assert flag in result.stdout


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--concurrency", "1,x"], "--concurrency"),
        (["--concurrency", "4,0"], "--concurrency"),
        (["--url", "localhost:8000"], "--url"),
        (["--extra-body", "[1]"], "--extra-body"),
    ],
)
def test_bad_flag_exits_2_with_one_line_naming_it(args: list[str], flag: str) -> None:
    result = bench(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert flag in lines[0]


def test_empty_prompts_file_exits_2(tmp_path: Path) -> None:
    empty = tmp_path / "prompts.txt"
    empty.write_text("\n  \n")
    result = bench("--prompts-file", str(empty))
    assert result.returncode == 2
    assert "--prompts-file" in result.stderr
