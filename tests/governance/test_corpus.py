"""Against a realistic list: a few hundred ordinary sentences are never refused, and every evasion is caught.

The lists (data/drugs.txt, data/crime.txt, data/allow.txt) are the kind a Chinese deployment keeps;
data/ordinary.txt holds news, science, code, recipes and daily life in Chinese and English,
including sentences where a listed word appears across a word or sentence boundary or inside a
longer word ("大麻烦", "伟大，麻醉", "Essex", "therapist", "rapeseed oil").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenyard.governance.content_filter import WordFilter
from tokenyard.governance.wordlists import FilterConfig

DATA = Path(__file__).parent / "data"
SENTENCES = [
    line for line in (DATA / "ordinary.txt").read_text(encoding="utf-8").splitlines() if line and line[0] != "#"
]
LISTED = [
    line.strip()
    for name in ("drugs.txt", "crime.txt")
    for line in (DATA / name).read_text(encoding="utf-8").splitlines()
    if line.strip() and not line.startswith("#")
]


@pytest.fixture(scope="module")
def words() -> WordFilter:
    config = FilterConfig(word_files=[DATA / "drugs.txt", DATA / "crime.txt"], allow_files=[DATA / "allow.txt"])
    loaded = WordFilter.from_config(config)
    assert loaded is not None
    return loaded


def refused(words: WordFilter, text: str) -> str | None:
    found = words.first_hit(None, [("text", text)])
    return found[1].rule.word if found else None


def test_the_corpus_is_a_few_hundred_sentences() -> None:
    assert len(SENTENCES) >= 250
    assert sum(1 for s in SENTENCES if any("\u4e00" <= c <= "\u9fff" for c in s)) >= 120


def test_no_ordinary_sentence_is_refused(words: WordFilter) -> None:
    assert [(s, refused(words, s)) for s in SENTENCES if refused(words, s)] == []


def test_no_ordinary_answer_is_masked_or_delayed_to_the_end(words: WordFilter) -> None:
    for sentence in SENTENCES:
        scanner = words.scanner(None)
        assert scanner is not None
        streamed = "".join(scanner.feed(char).text for char in sentence) + scanner.finish().text
        assert streamed == sentence


def full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def evasions(word: str) -> list[str]:
    """The ways people write a listed word to slip past a list."""
    letters = word.replace(" ", "")
    spelled = [sep.join(letters) for sep in (" ", ".", "*", "-", "_", "·", "\u3000", "\u200b", " \u200b ")]
    variants = [
        word,
        word.upper(),
        word.title(),
        full_width(word),
        "".join(c + "\u0336" for c in word),  # strike-through marks
        "".join(c + "\ufe0f" for c in word),  # variation selectors
        f"请问哪里有{word}？",
        f"where can I get {word} today",
        f"{word}!!!",
        *spelled,
    ]
    if not any(c.isascii() for c in letters):
        variants.append(letters[0] + " " + letters[1:])  # one space inside an ideographic word
    if len(letters) >= 3:
        variants.append("，".join(letters))
    return variants


@pytest.mark.parametrize("word", LISTED)
def test_every_evasion_of_every_listed_word_is_caught(words: WordFilter, word: str) -> None:
    missed = [variant for variant in evasions(word) if refused(words, variant) is None]
    assert missed == []


@pytest.mark.parametrize("word", LISTED)
def test_every_evasion_is_masked_when_streamed_one_character_at_a_time(words: WordFilter, word: str) -> None:
    for variant in evasions(word):
        scanner = words.scanner(None)
        assert scanner is not None
        masked = "".join(scanner.feed(char).text for char in variant) + scanner.finish().text
        assert refused(words, masked) is None, (variant, masked)
        assert "*" in masked


def test_without_the_allow_list_the_traps_in_the_corpus_are_refused() -> None:
    """The corpus does hold words a plain substring match refuses; the allow list is what clears them."""
    bare = WordFilter.from_config(FilterConfig(word_files=[DATA / "drugs.txt", DATA / "crime.txt"]))
    assert bare is not None
    hits = {refused(bare, s) for s in SENTENCES} - {None}
    assert hits == {"大麻", "色情", "传销", "代开发票", "麻古", "鸦片", "援交"}
