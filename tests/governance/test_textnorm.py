"""Normalisation: what the word filter compares, and what it remembers about separators."""

from __future__ import annotations

from tokenyard.governance.textnorm import GAP_HARD, GAP_NONE, GAP_SOFT, is_spaced, normalise, normalise_word


def test_full_width_case_and_accents_fold_to_one_form() -> None:
    assert normalise("ＣＯＣＡＩＮＥ").text == "cocaine"
    assert normalise("CóCaïNe").text == "cocaine"
    assert normalise("cafe\u0301").text == "cafe"  # a decomposed accent folds like a composed one
    assert normalise("①②").text == "12"
    assert normalise("Straße").text == "strasse"


def test_zero_width_and_marks_are_transparent() -> None:
    norm = normalise("敏\u200b感\u200d词\ufe0f")
    assert norm.text == "敏感词"
    assert norm.gap == (GAP_NONE, GAP_NONE, GAP_NONE)
    assert normalise("s\u0337e\u0337x\u0337").text == "sex"  # "zalgo" strokes
    assert normalise("大\u3164麻").text == "大麻"  # a Hangul filler hides nothing


def test_separators_leave_soft_or_hard_gaps() -> None:
    norm = normalise("敏 感。词")
    assert norm.text == "敏感词"
    assert norm.gap == (GAP_NONE, GAP_SOFT, GAP_HARD)
    assert normalise("a，b").gap[1] == GAP_HARD  # full-width comma folds to ","
    assert normalise("a\nb").gap[1] == GAP_HARD
    assert normalise("a*b").gap[1] == GAP_SOFT
    assert normalise(" x ").tail_gap == GAP_SOFT


def test_origin_points_at_the_original_characters() -> None:
    text = "买 ＫＫ粉\u200b了"
    norm = normalise(text)
    assert norm.text == "买kk粉了"
    assert [text[i] for i in norm.origin] == ["买", "Ｋ", "Ｋ", "粉", "了"]
    ligature = normalise("ﬁx")  # one original character, two normalised ones
    assert ligature.text == "fix"
    assert ligature.origin == (0, 0, 1)


def test_word_edges_only_in_spaced_scripts() -> None:
    assert is_spaced("a") and is_spaced("7") and is_spaced("ж")
    assert not is_spaced("大") and not is_spaced("カ") and not is_spaced("한")
    norm = normalise("Essex 买meth")
    assert norm.joined_before(norm.text.index("sex"))
    assert not norm.joined_before(norm.text.index("meth"))  # after an ideograph: a word may start


def test_listed_words_keep_their_own_gaps() -> None:
    assert normalise_word("crystal meth") == ("crystalmeth", frozenset({7}))
    assert normalise_word(" 大麻 ") == ("大麻", frozenset())
