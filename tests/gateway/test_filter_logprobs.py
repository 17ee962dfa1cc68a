"""Logprobs under the word filter: entries leave with their text, masked or cut as it was, and no
alternative spells a listed word. Small fake chunks through the real `OutputGuard`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import Request

from tokenyard.gateway.filtering import ContentScreen, OutputGuard
from tokenyard.gateway.logprobs import TextOffsets, chat_logprobs, completion_logprobs
from tokenyard.gateway.serving_completion import ChoiceText
from tokenyard.governance.content_filter import WordFilter
from tokenyard.governance.wordlists import FilterConfig
from tokenyard.protocol.internal import GenerateChunk, LogprobEntry, TokenLogprobs
from tokenyard.protocol.openai import ChatCompletionRequest, CompletionRequest


def tok(text: str | bytes, *alternatives: str, logprob: float | None = -0.1) -> TokenLogprobs:
    raw = text if isinstance(text, bytes) else text.encode()
    token = text if isinstance(text, str) else "".join(f"\\x{b:02x}" for b in raw)
    top = [LogprobEntry(token=t, logprob=-1.0 - i, bytes=list(t.encode())) for i, t in enumerate(alternatives)]
    return TokenLogprobs(token=token, logprob=logprob, bytes=list(raw), top_logprobs=top)


def piece(text: str, *entries: TokenLogprobs, finish: str | None = None) -> GenerateChunk:
    return GenerateChunk(text=text, logprobs=list(entries), finish_reason=finish)  # type: ignore[arg-type]


# "The capital is Paris.", a token per chunk as streamed; " capital" could have been " Paris" too.
PARIS = [
    piece("The", tok("The")),
    piece(" capital", tok(" capital", " Paris", " city")),
    piece(" is", tok(" is")),
    piece(" Par", tok(" Par", " Paris", " Lyon")),
    piece("is", tok("is", "ish")),
    piece(".", tok("."), finish="stop"),
]
# "大麻吗" in byte-level tokens: 大 = e5 a4 a7, 麻 = e9 ba bb, released with the text they complete.
CANNABIS = [
    piece("大", tok(b"\xe5\xa4"), tok(b"\xa7\xe9\xba")),
    piece("麻", tok(b"\xbb", "米")),
    piece("吗", tok("吗"), finish="stop"),
]


def guard_for(tmp_path: Path, action: str, completion: CompletionRequest | None = None) -> OutputGuard:
    words, allow = tmp_path / "words.txt", tmp_path / "allow.txt"
    words.write_text("Paris\n大麻\n", encoding="utf-8")
    allow.write_text("大麻烦\n", encoding="utf-8")
    config = FilterConfig(word_files=[words], allow_files=[allow], output_action=action)  # type: ignore[arg-type]
    screen = ContentScreen(WordFilter.from_config(config))
    request = Request({"type": "http", "method": "POST", "path": "/", "headers": []})
    if completion is not None:
        guard = screen.completion(completion, request)
    else:
        body = ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        guard = screen.chat(body, request)
    assert guard is not None
    return guard


async def filtered(guard: OutputGuard, chunks: list[GenerateChunk]) -> list[GenerateChunk]:
    async def source() -> AsyncIterator[tuple[int, GenerateChunk]]:
        for chunk in chunks:
            yield 0, chunk

    return [chunk async for _, chunk in guard.filter(source(), lambda index: None)]


def entries_of(chunks: list[GenerateChunk]) -> list[TokenLogprobs]:
    return [entry for chunk in chunks for entry in chunk.logprobs or []]


def assert_hidden(chunks: list[GenerateChunk], *words: str) -> None:
    """Neither the chunks, nor both response shapes of their logprobs, nor the tokens' bytes show a word."""
    entries = entries_of(chunks)
    dumps = [chunk.model_dump_json() for chunk in chunks]
    dumps += [chat_logprobs(entries).model_dump_json(), completion_logprobs(entries, TextOffsets()).model_dump_json()]
    joined = bytes(b for entry in entries for b in entry.bytes)
    for word in words:
        assert not any(word in dump or json.dumps(word) in dump for dump in dumps)
        assert word.encode() not in joined


@pytest.mark.parametrize("whole", [False, True])
async def test_masked_text_masks_its_tokens_and_alternatives_that_spell_the_word_go(
    tmp_path: Path, whole: bool
) -> None:
    chunks = PARIS
    if whole:  # a worker may send several tokens in one chunk
        chunks = [
            piece("The capital is", *entries_of(PARIS[:3])),
            piece(" Paris.", *entries_of(PARIS[3:]), finish="stop"),
        ]
    out = await filtered(guard_for(tmp_path, "mask"), chunks)
    text = "".join(chunk.text for chunk in out)
    assert text == "The capital is *****."
    entries = entries_of(out)
    assert [e.token for e in entries] == ["The", " capital", " is", " ***", "**", "."]
    assert bytes(b for e in entries for b in e.bytes).decode() == text
    assert [[t.token for t in e.top_logprobs] for e in entries] == [[], [" city"], [], [], [], []]
    assert [e.logprob for e in entries] == [e.logprob for e in entries_of(PARIS)]
    assert_hidden(out, "Paris", "Par")


async def test_entries_wait_for_their_text(tmp_path: Path) -> None:
    out = await filtered(guard_for(tmp_path, "mask"), PARIS)
    # " Par" and "is" are held with their text until "." shows that "Paris" is a word.
    assert [(c.text, [e.token for e in c.logprobs or []]) for c in out[2:]] == [
        (" is", [" is"]),
        (" ", []),  # the space is out, its token " Par" waits for "Par"
        ("", []),
        ("*****.", [" ***", "**", "."]),
    ]


async def test_split_characters_are_masked_byte_for_byte(tmp_path: Path) -> None:
    out = await filtered(guard_for(tmp_path, "mask"), CANNABIS)
    assert "".join(c.text for c in out) == "**吗"
    entries = entries_of(out)
    assert [e.token for e in entries] == ["", "*", "*", "吗"]
    assert bytes(b for e in entries for b in e.bytes).decode() == "**吗"
    assert all(e.top_logprobs == [] for e in entries)
    assert_hidden(out, "大麻", "大", "麻")


async def test_stop_sends_nothing_past_the_cut(tmp_path: Path) -> None:
    out = await filtered(guard_for(tmp_path, "stop"), PARIS)
    assert "".join(c.text for c in out) == "The capital is "
    assert [c.finish_reason for c in out if c.finish_reason] == ["content_filter"]
    entries = entries_of(out)
    assert [e.token for e in entries] == ["The", " capital", " is", " "]  # " Par" cut to what was shown
    assert bytes(b for e in entries for b in e.bytes).decode() == "The capital is "
    assert_hidden(out, "Paris", "Par")
    cut = await filtered(guard_for(tmp_path, "stop"), CANNABIS)
    assert entries_of(cut) == [] and "".join(c.text for c in cut) == ""


async def test_a_token_longer_than_its_text_is_judged_on_its_own(tmp_path: Path) -> None:
    """At a stop string the last token may hold more than the text sent ("is" cut from " Paris")."""
    out = await filtered(
        guard_for(tmp_path, "mask"), [piece("Go", tok("Go")), piece(" Par", tok(" Paris"), finish="stop")]
    )
    assert "".join(c.text for c in out) == "Go Par"
    assert [e.token for e in entries_of(out)] == ["Go", " Par"]
    assert_hidden(out, "Paris")


async def test_ordinary_logprobs_are_unchanged(tmp_path: Path) -> None:
    chunks = [
        piece("这真是个", tok("这"), tok("真是"), tok("个", "一")),
        piece("大", tok(b"\xe5\xa4", "小"), tok(b"\xa7\xe9\xba")),
        piece("麻", tok(b"\xbb")),
        piece("烦。Paris", tok("烦", "事"), tok("。"), tok("Par"), tok("is", "ty")),  # "Parisian" is not "Paris"
        piece("ian", tok("ian"), finish="stop"),
    ]
    out = await filtered(guard_for(tmp_path, "mask"), chunks)
    assert "".join(c.text for c in out) == "这真是个大麻烦。Parisian"
    assert entries_of(out) == entries_of(chunks)


async def test_echo_prompt_logprobs_and_a_word_across_the_prompts_end(tmp_path: Path) -> None:
    body = CompletionRequest(model="m", prompt="大米和大", echo=True, logprobs=2, max_tokens=2)
    first = GenerateChunk(
        text="麻",
        prompt_text="大米和大",
        prompt_logprobs=[tok("大", logprob=None), tok("米", "麻", "饼"), tok("和"), tok("大")],
        logprobs=[tok("麻", "米")],
    )
    out = await filtered(guard_for(tmp_path, "mask", body), [first, piece("吧", tok("吧"), finish="stop")])
    texts = ChoiceText(body)
    pieces = [texts.piece(chunk) for chunk in out]
    assert "".join(text for text, _ in pieces) == "大米和大*吧"
    prompt = out[0].prompt_logprobs or []
    assert [[t.token for t in e.top_logprobs] for e in prompt] == [[], ["饼"], [], []]  # 大 + 麻 would spell it
    shapes = " ".join(logprobs.model_dump_json() for _, logprobs in pieces if logprobs)
    assert "麻" not in shapes and [e.token for e in entries_of(out)] == ["*", "吧"]
    stopped = await filtered(guard_for(tmp_path, "stop", body), [first, piece("吧", tok("吧"), finish="stop")])
    assert [(c.text, c.logprobs, c.finish_reason) for c in stopped] == [("", [], None), ("", [], "content_filter")]
