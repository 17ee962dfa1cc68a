"""The `filter` settings: lists loaded at start, clear errors for bad files, per-tenant lists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tokenyard.config import load_settings
from tokenyard.errors import ConfigError
from tokenyard.governance.content_filter import WordFilter
from tokenyard.governance.wordlists import FilterConfig


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_lists_load_with_comments_blank_lines_and_line_numbers(tmp_path: Path) -> None:
    words = write(tmp_path / "drugs.txt", "# drugs\n\n大麻\n  冰毒  \n")
    allow = write(tmp_path / "allow.txt", "大麻烦\n")
    wf = WordFilter.from_config(FilterConfig(word_files=[words], allow_files=[allow]))
    assert wf is not None
    assert wf.first_hit(None, [("prompt", "这是个大麻烦")]) is None
    where, hit = wf.first_hit(None, [("prompt", "ok"), ("messages[1].content", "冰 毒")]) or ("", None)
    assert where == "messages[1].content"
    assert hit is not None and (hit.rule.rule_id, hit.rule.word) == ("drugs:4", "冰毒")


def test_a_byte_order_mark_is_not_part_of_the_first_word(tmp_path: Path) -> None:
    words = tmp_path / "bom.txt"
    words.write_bytes("\ufeff大麻\n".encode())
    wf = WordFilter.from_config(FilterConfig(word_files=[words]))
    assert wf is not None and wf.first_hit(None, [("p", "大麻")]) is not None


def test_off_or_without_words_there_is_no_filter(tmp_path: Path) -> None:
    words = write(tmp_path / "words.txt", "大麻\n")
    assert WordFilter.from_config(FilterConfig(enabled=False, word_files=[words])) is None
    assert WordFilter.from_config(FilterConfig()) is None
    allow_only = write(tmp_path / "allow.txt", "大麻烦\n")
    assert WordFilter.from_config(FilterConfig(allow_files=[allow_only])) is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "filter.word_files: cannot read"),
        (b"ok\n\xff\xfe\n", "line 2 is not UTF-8 text"),
        (b"ok\n...\n", "line 2 has no letter, digit or ideograph"),
    ],
)
def test_a_bad_list_is_a_config_error_naming_file_and_line(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "bad.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as info:
        WordFilter.from_config(FilterConfig(word_files=[path]))
    assert str(path) in str(info.value)


def test_two_lists_of_the_same_name_are_refused(tmp_path: Path) -> None:
    first = write(tmp_path / "a" / "words.txt", "大麻\n")
    second = write(tmp_path / "b" / "words.txt", "冰毒\n")
    with pytest.raises(ConfigError, match="two word lists are named 'words'"):
        WordFilter.from_config(FilterConfig(word_files=[first, second]))


def test_a_tenant_gets_the_global_lists_plus_its_own(tmp_path: Path) -> None:
    common = write(tmp_path / "common.txt", "大麻\n")
    acme = write(tmp_path / "acme.txt", "竞品\n")
    acme_allow = write(tmp_path / "acme-allow.txt", "大麻烦\n")
    config = FilterConfig(
        word_files=[common],
        tenants={"acme": {"word_files": [acme], "allow_files": [acme_allow]}},  # type: ignore[dict-item]
    )
    wf = WordFilter.from_config(config)
    assert wf is not None

    def rule(tenant: str | None, text: str) -> str | None:
        found = wf.first_hit(tenant, [("p", text)])
        return found[1].rule.rule_id if found else None

    assert rule("acme", "竞品") == "acme:1"
    assert rule("acme", "大麻") == "common:1"
    assert rule("acme", "大麻烦") is None  # acme's allow list
    assert rule("other", "竞品") is None
    assert rule("other", "大麻烦") == "common:1"
    assert rule(None, "大麻") == "common:1"


def test_a_tenant_list_that_cannot_be_read_names_the_tenant(tmp_path: Path) -> None:
    config = FilterConfig(tenants={"acme": {"word_files": [tmp_path / "missing.txt"]}})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match=r"filter\.tenants\.acme\.word_files: cannot read"):
        WordFilter.from_config(config)


def test_the_section_comes_from_yaml_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(
        tmp_path / "tokenyard.yaml",
        "filter:\n  word_files: [words.txt]\n  output_action: stop\n  tenants:\n    acme:\n      word_files: [a.txt]\n",
    )
    monkeypatch.setenv("TOKENYARD_FILTER__ENABLED", "false")
    settings = load_settings(config)
    assert settings.filter.output_action == "stop"
    assert settings.filter.word_files == [Path("words.txt")]
    assert settings.filter.tenants["acme"].word_files == [Path("a.txt")]
    assert settings.filter.enabled is False


def test_an_unknown_output_action_is_a_config_error(tmp_path: Path) -> None:
    config = write(tmp_path / "tokenyard.yaml", "filter:\n  output_action: redact\n")
    with pytest.raises(ConfigError, match=r"filter\.output_action"):
        load_settings(config)


@pytest.mark.parametrize("command", ["gateway", "serve"])
def test_a_bad_list_stops_the_command_with_one_line_and_exit_2(tmp_path: Path, command: str) -> None:
    config = write(tmp_path / "tokenyard.yaml", f"filter:\n  word_files: [{tmp_path / 'missing.txt'}]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENYARD_")}
    env["TOKENYARD_HOME"] = str(tmp_path / "home")
    result = subprocess.run(
        [sys.executable, "-m", "tokenyard", command, "--config", str(config), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "filter.word_files: cannot read" in result.stderr and "missing.txt" in result.stderr
