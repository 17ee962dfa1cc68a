"""The worker's per-token logprobs in OpenAI's two response shapes.

Chat (`logprobs: true`, `top_logprobs: k`) wants `{"content": [{token, logprob, bytes, top_logprobs}],
"refusal": null}`: the worker's entries already have that shape. Legacy completions (`logprobs: k`)
want parallel lists `tokens`, `token_logprobs`, `top_logprobs` (a dict of the k alternatives plus the
chosen token, as OpenAI documents "up to logprobs+1 elements") and `text_offset`, the character where
each token starts in the choice's text. A token that is only part of a character is written
`bytes:\\xe4\\xbd` there, as OpenAI's legacy API writes it. Pure functions and a small offset counter.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

from tokenyard.protocol.internal import LogprobEntry, TokenLogprobs
from tokenyard.protocol.openai import ChatChoiceLogprobs, ChatTokenLogprob, CompletionLogprobs, TopLogprob


def chat_logprobs(entries: Sequence[TokenLogprobs]) -> ChatChoiceLogprobs:
    """OpenAI's chat `choices[].logprobs` for these tokens."""
    return ChatChoiceLogprobs(content=[_chat_token(entry) for entry in entries], refusal=None)


def _chat_token(entry: TokenLogprobs) -> ChatTokenLogprob:
    assert entry.logprob is not None, "generated tokens always have a logprob"
    return ChatTokenLogprob(
        token=entry.token,
        logprob=entry.logprob,
        bytes=entry.bytes,
        top_logprobs=[TopLogprob(token=top.token, logprob=top.logprob, bytes=top.bytes) for top in entry.top_logprobs],
    )


class TextOffsets:
    """Character offsets of consecutive tokens in the text they decode to, from their raw bytes.

    An incremental UTF-8 decoder counts a character once it is complete, so a token that starts in
    the middle of a character gets that character's offset, as in the text the client reads.
    """

    def __init__(self, start: int = 0) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._chars = start

    def next(self, raw: Sequence[int]) -> int:
        offset = self._chars
        self._chars += len(self._decoder.decode(bytes(raw)))
        return offset


def legacy_token(entry: TokenLogprobs | LogprobEntry) -> str:
    try:
        bytes(entry.bytes).decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{byte:02x}" for byte in entry.bytes)
    return entry.token


def completion_logprobs(
    entries: Sequence[TokenLogprobs], offsets: TextOffsets, into: CompletionLogprobs | None = None
) -> CompletionLogprobs:
    """The legacy completions shape for these tokens (appended to `into`), offsets continuing `offsets`."""
    result = into if into is not None else CompletionLogprobs()
    for entry in entries:
        token = legacy_token(entry)
        result.tokens.append(token)
        result.token_logprobs.append(entry.logprob)
        result.text_offset.append(offsets.next(entry.bytes))
        if entry.logprob is None:  # a prompt's first token: nothing predicts it
            result.top_logprobs.append(None)
        else:
            top = {legacy_token(alt): alt.logprob for alt in entry.top_logprobs}
            top.setdefault(token, entry.logprob)  # the chosen token is always included
            result.top_logprobs.append(top)
    return result
