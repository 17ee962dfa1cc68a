"""The output filter as text streams in: split words caught at every split point, normal text not delayed."""

from __future__ import annotations

import pytest

from tests.governance.helpers import matcher
from tokenyard.governance.output_scan import ChoiceScanner, scan_whole, spells_word
from tokenyard.governance.textnorm import normalise
from tokenyard.governance.wordfilter import Matcher

WORDS = ["大麻", "敏感词", "sex", "crystal meth", "海洛因"]
TEXTS = {
    "买大麻吗": "买**吗",
    "请勿传播敏 感 词。": "请勿传播* * *。",
    "no s.e.x here": "no *.*.* here",
    "buy crystal meth now": "buy ******* **** now",
    "这是个大麻烦，海洛因也是": "这是个大麻烦，***也是",
    "Essex and 大麻": "Essex and **",
}


@pytest.fixture(scope="module")
def m() -> Matcher:
    return matcher(WORDS, allowed=("大麻烦",))


def stream(m: Matcher, pieces: list[str], action: str = "mask") -> tuple[str, bool]:
    scanner = ChoiceScanner(m, action)  # type: ignore[arg-type]
    out, stopped = "", False
    for piece in pieces:
        scanned = scanner.feed(piece)
        out += scanned.text
        stopped = stopped or scanned.stopped
    last = scanner.finish()
    return out + last.text, stopped or last.stopped


@pytest.mark.parametrize(("text", "masked"), TEXTS.items())
def test_whole_text_is_masked_per_character(m: Matcher, text: str, masked: str) -> None:
    assert scan_whole(m, "mask", text).text == masked


@pytest.mark.parametrize(("text", "masked"), TEXTS.items())
def test_a_word_split_across_two_chunks_is_caught_at_every_split_point(m: Matcher, text: str, masked: str) -> None:
    for cut in range(len(text) + 1):
        assert stream(m, [text[:cut], text[cut:]]) == (masked, False), cut


@pytest.mark.parametrize(("text", "masked"), TEXTS.items())
def test_every_three_way_split_and_one_character_chunks(m: Matcher, text: str, masked: str) -> None:
    for first in range(len(text) + 1):
        for second in range(first, len(text) + 1):
            assert stream(m, [text[:first], text[first:second], text[second:]])[0] == masked, (first, second)
    assert stream(m, list(text))[0] == masked


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("买大麻吗", "买"),
        ("请勿传播敏 感 词。", "请勿传播"),
        ("no s.e.x here", "no "),
        ("这是个大麻烦，海洛因也是", "这是个大麻烦，"),
    ],
)
def test_stop_cuts_before_the_first_word_at_every_split_point(m: Matcher, text: str, kept: str) -> None:
    for cut in range(len(text) + 1):
        assert stream(m, [text[:cut], text[cut:]], "stop") == (kept, True), cut


def test_after_a_stop_nothing_more_is_released(m: Matcher) -> None:
    scanner = ChoiceScanner(m, "stop")
    assert scanner.feed("好的大麻吗").stopped
    assert scanner.feed("再来一段").text == ""
    assert scanner.finish().stopped


def test_text_is_held_only_while_it_could_start_a_listed_word(m: Matcher) -> None:
    scanner = ChoiceScanner(m, "mask")
    released = ""
    for char in "今天天气很好，大家去公园。The weather is fine, sexy crystals.":
        released += scanner.feed(char).text
        held = normalise(scanner.held).text
        # What waits is exactly a tail that is still the beginning of some listed or allowed word.
        assert held == "" or m.hold_start(normalise(scanner.held)) == 0, scanner.held
    assert scanner.held == "" or normalise(scanner.held).text == ""
    assert released + scanner.finish().text == "今天天气很好，大家去公园。The weather is fine, sexy crystals."


def test_ordinary_text_passes_without_delay(m: Matcher) -> None:
    scanner = ChoiceScanner(m, "mask")
    for char in "今天天气很好。We meet at noon, then go home.":
        assert scanner.feed(char).text == char  # nothing here begins a listed word


def test_delay_lasts_until_the_word_is_decided(m: Matcher) -> None:
    scanner = ChoiceScanner(m, "mask")
    assert scanner.feed("伟大").text == "伟"  # "大" could begin "大麻"
    assert scanner.feed("的").text == "大的"
    assert scanner.feed("大麻").text == ""  # "大麻烦" would excuse it: wait for one more character
    assert scanner.feed("烦").text == ""
    assert scanner.feed("了").text == "大麻烦了"


def test_masking_reports_each_hit_once(m: Matcher) -> None:
    scanner = ChoiceScanner(m, "mask")
    hits = []
    for char in "大麻 和 海洛因 和 大麻":
        hits += scanner.feed(char).hits
    hits += scanner.finish().hits
    assert [hit.rule.word for hit in hits] == ["大麻", "海洛因", "大麻"]


@pytest.mark.parametrize(("action", "shown"), [("mask", "*吧"), ("stop", "")])
def test_a_word_begun_in_the_echoed_prompt_is_caught_in_the_answer(m: Matcher, action: str, shown: str) -> None:
    scanner = ChoiceScanner(m, action)  # type: ignore[arg-type]
    scanner.prime("我要买大")
    first = scanner.feed("麻")
    assert first.text == "" and scanner.held == "麻"  # "大" is out already: "麻" waits for what follows
    rest = scanner.feed("吧")
    assert rest.text == shown and rest.stopped == (action == "stop")
    assert [hit.rule.word for hit in rest.hits] == ["大麻"]


def test_spells_word_reads_a_piece_in_its_context(m: Matcher) -> None:
    assert spells_word(m, "买大", "麻", "吧") and spells_word(m, "", "s", "ex now")
    assert not spells_word(m, "这是个大", "麻", "烦") and not spells_word(m, "大麻", "吧", "")
