"""The word filter in the request path: requests screened before dispatch, answers as they stream.

The serving classes make one call per request (`ContentScreen.chat` or `.completion`): it refuses
a request holding a listed word (400 `content_filtered`, naming the list and the rule, never the
word) and returns the `OutputGuard` that filters the answer's chunks, or None when the filter is
off. Every action is logged with the word (for the admin) and recorded on the request as
`request.state.filter_actions`, a list of `FilterAction`, for metering.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Literal

from fastapi import Request
from pydantic import BaseModel

from tokenyard.errors import ContentFilteredError, InvalidRequestError
from tokenyard.gateway.filtered_choice import FilteredChoice
from tokenyard.governance.content_filter import WordFilter
from tokenyard.governance.output_scan import ChoiceScanner
from tokenyard.governance.wordfilter import Hit
from tokenyard.protocol.internal import GenerateChunk
from tokenyard.protocol.openai import ChatCompletionRequest, CompletionRequest

logger = logging.getLogger(__name__)

Chunks = AsyncIterator[tuple[int, GenerateChunk]]
FilteredChunks = AsyncGenerator[tuple[int, GenerateChunk], None]


class FilterAction(BaseModel):
    """One thing the word filter did to a request (for the usage record)."""

    stage: Literal["input", "output"]
    action: Literal["refused", "masked", "stopped"]
    rule_id: str
    list_name: str
    where: str  # the request field ("messages[1].content") or the answer's choice ("choices[0]")


def chat_texts(body: ChatCompletionRequest) -> Iterator[tuple[str, str]]:
    """Every text a chat request sends the model, with where it is: message contents (each part),
    tool calls' arguments (and the strings inside them, so JSON escapes hide nothing), tool results."""
    for i, message in enumerate(body.messages):
        if isinstance(message.content, str):
            yield f"messages[{i}].content", message.content
        elif message.content is not None:
            for j, part in enumerate(message.content):
                yield f"messages[{i}].content[{j}].text", part.text
        for j, call in enumerate(message.tool_calls or []):
            where = f"messages[{i}].tool_calls[{j}].function.arguments"
            yield where, call.function.arguments
            yield from ((where, text) for text in _json_strings(call.function.arguments))


def _json_strings(text: str) -> list[str]:
    try:
        value = json.loads(text)
    except ValueError:
        return []
    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            stack += item
    return found


def completion_texts(body: CompletionRequest) -> Iterator[tuple[str, str]]:
    """The prompts of a text completion; prompts given as token ids cannot be read here: refused."""
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise InvalidRequestError(
                "The content filter is on, and it reads text: send the prompt as text, not as token ids.",
                param="prompt",
            )
        yield ("prompt" if isinstance(body.prompt, str) else f"prompt[{i}]"), prompt


class ContentScreen:
    """The gateway's one word filter (None: off), applied per request with the caller's tenant."""

    def __init__(self, words: WordFilter | None) -> None:
        self._words = words

    def chat(self, body: ChatCompletionRequest, request: Request) -> OutputGuard | None:
        return self._screen(chat_texts(body), request)

    def completion(self, body: CompletionRequest, request: Request) -> OutputGuard | None:
        return self._screen(completion_texts(body), request)

    def _screen(self, texts: Iterator[tuple[str, str]], request: Request) -> OutputGuard | None:
        actions: list[FilterAction] = []
        request.state.filter_actions = actions
        principal = getattr(request.state, "principal", None)  # set by the auth middleware
        tenant: str | None = getattr(principal, "tenant", None)
        if self._words is None or not self._words.matcher_for(tenant).num_listed:
            return None
        log = ActionLog(actions, getattr(request.state, "request_id", None), tenant)
        words = self._words
        found = words.first_hit(tenant, texts)
        if found is not None:
            where, hit = found
            log.record("input", "refused", hit, where)
            raise ContentFilteredError(rule_id=hit.rule.rule_id, list_name=hit.rule.list_name, param=where)
        return OutputGuard(lambda: words.scanner(tenant), log)


class ActionLog:
    """Where a request's filter actions go: the admin's log (with the word) and the request's list."""

    def __init__(self, actions: list[FilterAction], request_id: str | None, tenant: str | None) -> None:
        self.actions = actions
        self._request_id = request_id
        self._tenant = tenant

    def record(
        self, stage: Literal["input", "output"], action: Literal["refused", "masked", "stopped"], hit: Hit, where: str
    ) -> None:
        rule = hit.rule
        self.actions.append(
            FilterAction(stage=stage, action=action, rule_id=rule.rule_id, list_name=rule.list_name, where=where)
        )
        logger.warning(
            "content filter %s %s in %s: rule %s matched %r (request %s, tenant %s)",
            action,
            stage,
            where,
            rule.rule_id,
            rule.word,
            self._request_id,
            self._tenant,
        )


class OutputGuard:
    """Filters one answer's chunks, every choice with its own scanner."""

    def __init__(self, new_scanner: Callable[[], ChoiceScanner | None], log: ActionLog) -> None:
        self._new_scanner = new_scanner
        self._log = log

    async def filter(
        self, chunks: Chunks, stop: Callable[[int], None]
    ) -> AsyncGenerator[tuple[int, GenerateChunk], None]:
        """The chunks with their text and logprobs filtered (`filtered_choice`); a choice the filter
        stops ends with "content_filter", `stop(index)` tells its worker to stop, and its later chunks
        carry only their token counts."""
        choices: dict[int, FilteredChoice | None] = {}
        async for index, chunk in chunks:
            if index not in choices:
                scanner = self._new_scanner()
                choices[index] = None if scanner is None else FilteredChoice(scanner)
            choice = choices[index]
            if choice is None:
                yield index, chunk
            elif choice.scanner.stopped:
                yield index, chunk.model_copy(update={"text": "", "logprobs": None, "finish_reason": None})
            else:
                filtered, scanned = choice.apply(chunk)
                for hit in scanned.hits:
                    self._log.record("output", "stopped" if scanned.stopped else "masked", hit, f"choices[{index}]")
                if scanned.stopped:
                    stop(index)
                yield index, filtered
