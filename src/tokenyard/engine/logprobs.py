"""Generated tokens' log-probabilities, held back with their text.

A sequence's text is streamed late: the detokeniser holds back a cut UTF-8 character and the stop
matcher a possible stop string. OpenAI's logprobs describe the tokens of the text a client received,
so `LogprobHoldback` releases a token's logprob only once all of its text has been streamed, and at a
stop string keeps only the tokens that contributed some of the text before it. Offsets are counted in
characters of the decoded text; no torch here.
"""

from __future__ import annotations

from tokenyard.engine.base import TokenLogprob


class LogprobHoldback:
    """Holds each generated token's logprob until the text it decoded to has been streamed."""

    def __init__(self) -> None:
        self._pending: list[TokenLogprob] = []
        self._ends: list[int] = []  # decoded-text end offset of each pending token whose text is known
        self._decoded = 0  # characters decoded so far (streamed or held back)
        self._streamed = 0  # characters streamed so far
        self._released_end = 0  # end offset of the last released token

    def add(self, logprob: TokenLogprob) -> None:
        self._pending.append(logprob)

    def advance(self, streamed: str, held_back: int) -> list[TokenLogprob]:
        """After a token: `streamed` is the text emitted now, `held_back` the characters decoded but withheld.

        Tokens still inside a cut character decode to nothing yet; they end where the text they
        complete ends, so they are released together with it.
        """
        self._streamed += len(streamed)
        decoded = self._streamed + held_back
        if decoded > self._decoded:
            self._ends += [decoded] * (len(self._pending) - len(self._ends))
            self._decoded = decoded
        count = sum(1 for end in self._ends if end <= self._streamed)
        return self._release(count)

    def finish(self, streamed: str, *, stopping_token: bool, cut_at_stop_string: bool) -> list[TokenLogprob]:
        """At the end: everything left, less the stopping token (EOS or a stop id: it has no text), or at
        a stop string, the tokens that began before the cut."""
        self._streamed += len(streamed)
        if stopping_token and self._pending:
            self._pending.pop()
            del self._ends[len(self._pending) :]
        if not cut_at_stop_string:
            return self._release(len(self._pending))
        count, start = 0, self._released_end
        for index in range(len(self._pending)):
            if start >= self._streamed:
                break
            count = index + 1
            start = self._ends[index] if index < len(self._ends) else start
        return self._release(count)

    def _release(self, count: int) -> list[TokenLogprob]:
        released, self._pending = self._pending[:count], self._pending[count:]
        if count and count <= len(self._ends):
            self._released_end = self._ends[count - 1]
        del self._ends[:count]
        return released
