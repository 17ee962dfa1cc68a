"""The `filter` settings section and the word list files it names.

A list file is UTF-8 text, one word per line; blank lines and lines starting with "#" are skipped.
Every word becomes a `Rule` whose id is the file's name without its extension and the line number
("drugs:12"): clients see the id, never the word, and the id stays the same as long as lines are
only appended. Allow lists (`allow_files`) hold words that contain a listed word yet are fine
("大麻烦", a big problem, contains "大麻", cannabis). See docs/security.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tokenyard.errors import ConfigError
from tokenyard.governance.textnorm import normalise_word

OutputAction = Literal["mask", "stop"]


class TenantWordLists(BaseModel):
    """A tenant's own lists, used on top of the global ones for that tenant's requests."""

    model_config = ConfigDict(extra="forbid")

    word_files: list[Path] = Field(default_factory=list, description="this tenant's extra word lists")
    allow_files: list[Path] = Field(default_factory=list, description="this tenant's extra allow lists")


class FilterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="check requests and answers against the word lists")
    word_files: list[Path] = Field(
        default_factory=list, description="word lists, one word per line: input hit -> 400 content_filtered"
    )
    allow_files: list[Path] = Field(
        default_factory=list, description="words that contain a listed word but are fine ('大麻烦' for '大麻')"
    )
    output_action: OutputAction = Field(
        default="mask", description="a listed word in an answer: mask (one * per character) or stop"
    )
    tenants: dict[str, TenantWordLists] = Field(
        default_factory=dict, description="per tenant: extra word_files and allow_files"
    )


@dataclass(frozen=True)
class Rule:
    """One line of a list: what matches (key), where the word itself has gaps, and how to name it."""

    rule_id: str  # "<list>:<line>"
    list_name: str
    word: str  # as written in the file: for the admin's log only, never for a client
    key: str  # normalised (textnorm)
    word_gaps: frozenset[int]
    allow: bool


def load_rules(files: Iterable[Path], *, allow: bool, setting: str) -> list[Rule]:
    """Every word of every file, as rules; a file that cannot be used is a ConfigError naming it."""
    rules: list[Rule] = []
    for path in files:
        rules += _rules_of(Path(path), allow=allow, setting=setting)
    return rules


def check_list_names(files: Iterable[Path]) -> None:
    """Rule ids name their list by file name: two files of the same name would give one id two words."""
    seen: dict[str, Path] = {}
    for path in files:
        name = Path(path).stem
        if name in seen and seen[name] != Path(path):
            raise ConfigError(
                f"filter: two word lists are named '{name}' ({seen[name]}, {path}); rule ids are "
                "'<file name>:<line>', so list files need distinct names"
            )
        seen[name] = Path(path)


def _rules_of(path: Path, *, allow: bool, setting: str) -> list[Rule]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad_line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{setting}: {path} line {bad_line} is not UTF-8 text") from None
    rules = []
    for number, line in enumerate(text.splitlines(), start=1):
        word = line.strip()
        if not word or word.startswith("#"):
            continue
        key, gaps = normalise_word(word)
        if not key:
            raise ConfigError(f"{setting}: {path} line {number} has no letter, digit or ideograph to match")
        rules.append(Rule(f"{path.stem}:{number}", path.stem, word, key, gaps, allow))
    return rules
