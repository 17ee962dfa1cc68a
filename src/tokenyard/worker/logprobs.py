"""The engine's logprobs (token ids) as the wire's (token text and raw bytes), done where the tokenizer is.

OpenAI gives each token's text and its UTF-8 `bytes`, so a client can rebuild a character split across
byte-level tokens (common in Chinese) by joining the bytes. A token that is not valid UTF-8 on its own
shows as its escaped bytes, `\\xe4\\xbd`, as OpenAI's chat API writes such tokens, never as a lossy
U+FFFD (two different pieces would look the same). JSON has no -inf: an impossible token gets -9999,
OpenAI's value for "very unlikely".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tokenyard.engine.base import PromptTokenizer, TokenLogprob
from tokenyard.protocol.internal import LogprobEntry, TokenLogprobs

LOGPROB_FLOOR = -9999.0


def token_text(raw: bytes) -> str:
    """A token's text; its escaped bytes when it is only part of a character."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"\\x{byte:02x}" for byte in raw)


def finite(logprob: float) -> float:
    return logprob if math.isfinite(logprob) else LOGPROB_FLOOR


def entry(tokenizer: PromptTokenizer, token_id: int, logprob: float) -> LogprobEntry:
    raw = tokenizer.token_bytes(token_id)
    return LogprobEntry(token=token_text(raw), logprob=finite(logprob), bytes=list(raw))


def token_logprobs(tokenizer: PromptTokenizer, logprob: TokenLogprob) -> TokenLogprobs:
    """One sampled (or prompt) token with its alternatives."""
    chosen = entry(tokenizer, logprob.token_id, logprob.logprob)
    top = [entry(tokenizer, token, value) for token, value in logprob.top]
    return TokenLogprobs(token=chosen.token, logprob=chosen.logprob, bytes=chosen.bytes, top_logprobs=top)


def generated_logprobs(tokenizer: PromptTokenizer, logprobs: Sequence[TokenLogprob]) -> list[TokenLogprobs]:
    return [token_logprobs(tokenizer, logprob) for logprob in logprobs]


def prompt_logprobs(
    tokenizer: PromptTokenizer, prompt_ids: Sequence[int], logprobs: Sequence[TokenLogprob | None]
) -> list[TokenLogprobs]:
    """One entry per prompt token; the first (nothing predicts it) has no logprob and no alternatives."""
    entries = []
    for token_id, logprob in zip(prompt_ids, logprobs, strict=True):
        if logprob is None:
            raw = tokenizer.token_bytes(token_id)
            entries.append(TokenLogprobs(token=token_text(raw), logprob=None, bytes=list(raw)))
        else:
            entries.append(token_logprobs(tokenizer, logprob))
    return entries
