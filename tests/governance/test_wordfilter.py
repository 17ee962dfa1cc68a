"""The matcher: listed words after normalisation, word edges, separators, allow lists, rule ids."""

from __future__ import annotations

import pytest

from tests.governance.helpers import found, matcher, rules
from tokenyard.governance.textnorm import normalise
from tokenyard.governance.wordfilter import Matcher

WORDS = ["大麻", "敏感词", "冰毒", "K粉", "sex", "meth", "crystal meth", "cocaine"]


@pytest.fixture(scope="module")
def m() -> Matcher:
    return matcher(WORDS, allowed=("大麻烦",))


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("大麻", "大麻"),
        ("哪里能买到大麻？", "大麻"),
        ("大 麻", "大麻"),
        ("大*麻", "大麻"),
        ("敏 感 词", "敏感词"),
        ("敏\u200b感词", "敏感词"),
        ("敏 感词", "敏感词"),
        ("敏，感，词", "敏感词"),
        ("敏.感.词", "敏感词"),
        ("冰\u3000毒", "冰毒"),  # an ideographic space
        ("买k粉", "K粉"),
        ("ｋ粉", "K粉"),
        ("sex", "sex"),
        ("SEX!", "sex"),
        ("s e x", "sex"),
        ("s.e.x", "sex"),
        ("s\u200bex", "sex"),
        ("ｓｅｘ", "sex"),
        ("S̷E̷X̷", "sex"),
        ("买meth", "meth"),
        ("crystal meth", "crystal meth"),
        ("crystal-meth", "crystal meth"),
        ("c r y s t a l m e t h", "crystal meth"),
        ("CóCaïNe", "cocaine"),
        ("c-o-c-a-i-n-e", "cocaine"),
    ],
)
def test_listed_words_and_their_evasions_are_found(m: Matcher, text: str, word: str) -> None:
    assert word in found(m, text)


@pytest.mark.parametrize(
    "text",
    [
        "这真是个大麻烦",  # allowed: "大麻烦" contains "大麻"
        "伟大，麻醉师来了",  # a clause break between two words, not an evasion
        "他很伟大。麻省理工",
        "敏，感词",  # a lone clause break in a longer word: read as natural text
        "Essex",
        "sexy",
        "Sussex county",
        "that's ex-wife",
        "his ex",
        "method",
        "something",
        "OK粉丝见面会",  # "k粉" starting mid-word in a Latin run
        "cocaines",
        "",
    ],
)
def test_ordinary_text_is_not_a_hit(m: Matcher, text: str) -> None:
    assert found(m, text) == []


def test_an_allowed_word_excuses_only_what_it_covers(m: Matcher) -> None:
    assert found(m, "大麻烦和大麻") == ["大麻"]
    assert found(m, "大 麻 烦") == []  # the allow list sees through separators as well


def test_hits_name_their_list_and_line() -> None:
    m = Matcher(rules(["大麻", "冰毒"], "drugs") + rules(["porn"], "adult"))
    hits = m.hits(normalise("porn 和冰毒"))
    assert [(h.rule.rule_id, h.rule.list_name) for h in hits] == [("adult:1", "adult"), ("drugs:2", "drugs")]


def test_the_same_word_in_two_lists_hits_in_both() -> None:
    m = Matcher(rules(["大麻"], "a") + rules(["大麻"], "b"))
    assert [h.rule.rule_id for h in m.hits(normalise("大麻"))] == ["a:1", "b:1"]


def test_hit_positions_point_into_the_normalised_text(m: Matcher) -> None:
    norm = normalise("我买 大 麻")
    (hit,) = m.hits(norm)
    assert norm.text[hit.start : hit.end] == "大麻"
    assert [norm.origin[i] for i in range(hit.start, hit.end)] == [3, 5]


def test_hold_start_is_where_a_word_could_still_begin(m: Matcher) -> None:
    def hold(text: str) -> str:
        norm = normalise(text)
        return norm.text[m.hold_start(norm) :]

    assert hold("今天") == ""
    assert hold("今天大") == "大"
    assert hold("今天大麻") == "大麻"  # complete, but "大麻烦" would excuse it
    assert hold("敏 感") == "敏感"
    assert hold("the s") == "s"
    assert hold("this") == ""  # "s" ends a word here: nothing listed can start mid-word
    assert hold("crystal") == "crystal"
    assert hold("") == ""


def test_an_empty_matcher_finds_nothing() -> None:
    empty = Matcher([])
    assert empty.hits(normalise("大麻")) == []
    assert empty.hold_start(normalise("大麻")) == 2
    assert empty.num_listed == 0
