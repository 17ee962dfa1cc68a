"""Constrained decoding: per request, a matcher that says which tokens may come next.

Built on llguidance (docs/engine.md, "Structured output", has the measurements behind the choice).
A `Guide` (`protocol.sampling`, carried in `SamplingParams`) is a JSON schema or a Lark grammar
(llguidance's dialect, which can embed JSON schemas with `%json`; tool calls use it). `GuideCompiler`
compiles each distinct guide once against the model's tokenizer and keeps the compiled matchers in an
LRU; a request gets a cheap copy (`deep_copy`).
Each step the sampler fills an allowed-token bitmask for the guided rows only and masks their logits
(`mask_guided_rows`); the sequence then advances its matcher with the sampled token and finishes when
the grammar is complete. EOS is allowed by the mask only where the grammar accepts.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Collection, Sequence
from typing import Any

import llguidance
import torch

from tokenyard.errors import InvalidRequestError
from tokenyard.protocol.sampling import Guide
from tokenyard.protocol.tool_calls import JSON_LAYOUT

logger = logging.getLogger(__name__)
CACHE_SIZE = 128
_QUOTED_GRAMMAR = re.compile(r"^\s*\d+ \| ")  # "4 | call_0: ..." lines of a Lark error
_GRAMMAR_POSITION = re.compile(r"^at \d+\(\d+\): ")


def grammar_of(guide: Guide) -> str:
    """The llguidance grammar text for `guide`."""
    if guide.kind == "lark":
        return llguidance.LLMatcher.grammar_from_lark(guide.source)
    try:
        schema = json.loads(guide.source)
    except ValueError as exc:
        raise InvalidRequestError(f"Invalid JSON schema in '{guide.param}': {exc}", param=guide.param) from None
    options: Any = {**JSON_LAYOUT, "lenient": not guide.strict}  # llguidance's JsonCompileOptions
    return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=options)


class GuideMatcher:
    """One request's position in its grammar."""

    def __init__(self, matcher: Any) -> None:
        self._matcher = matcher

    def fill_bitmask(self, row: torch.Tensor) -> None:
        """Write the allowed next tokens into `row` ([W] int32, bit t%32 of word t//32 for token t)."""
        self._matcher.unsafe_compute_mask_ptr(row.data_ptr(), row.numel() * row.element_size())

    def advance(self, token: int) -> bool:
        """Consume a sampled token; True once the grammar is complete (nothing more may follow)."""
        if not self._matcher.consume_token(token):  # the mask forbids this; a matcher in error stops
            logger.warning("guided decoding stopped on a token its grammar refuses: %s", self.error)
        return bool(self._matcher.is_stopped())

    @property
    def error(self) -> str:
        return str(self._matcher.get_error()) if self._matcher.is_error() else ""


class GuideCompiler:
    """Compiles guides against one tokenizer, once per distinct guide (an LRU of compiled matchers)."""

    def __init__(self, hf_tokenizer: Any, *, vocab_size: int, eos_token_ids: Collection[int]) -> None:
        self._hf_tokenizer = hf_tokenizer
        self._vocab_size = vocab_size
        self._eos_token_ids = sorted(token for token in eos_token_ids if 0 <= token < vocab_size)
        self._tokenizer: Any = None  # built on the first guided request, not at start-up: it is slow to build
        self._compiled: OrderedDict[tuple[str, str, bool], Any] = OrderedDict()
        self._lock = threading.Lock()

    def matcher(self, guide: Guide) -> GuideMatcher:
        """A fresh matcher for `guide`; InvalidRequestError (naming `guide.param`) if it does not compile."""
        with self._lock:
            compiled = self._compiled_matcher(guide)
        matcher = GuideMatcher(compiled.deep_copy())
        for token in guide.generated:
            matcher.advance(token)
        return matcher

    def _compiled_matcher(self, guide: Guide) -> Any:
        key = (guide.kind, guide.source, guide.strict)
        if key in self._compiled:
            self._compiled.move_to_end(key)
            return self._compiled[key]
        try:
            compiled = llguidance.LLMatcher(self._llg_tokenizer(), grammar_of(guide), log_level=0, limits=_limits())
            problem = compiled.get_error() if compiled.is_error() else ""
        except (ValueError, TypeError) as exc:  # what the grammar builders raise for malformed input
            problem = str(exc)
        if problem:
            raise InvalidRequestError(
                f"Invalid schema or grammar in '{guide.param}': {_one_line(problem)}", param=guide.param
            )
        self._compiled[key] = compiled
        if len(self._compiled) > CACHE_SIZE:
            self._compiled.popitem(last=False)
        return compiled

    def _llg_tokenizer(self) -> Any:
        if self._tokenizer is None:
            eos = self._eos_token_ids or None
            self._tokenizer = _llg_tokenizer(self._hf_tokenizer, n_vocab=self._vocab_size, eos_token=eos)
        return self._tokenizer


def _llg_tokenizer(tokenizer: Any, *, n_vocab: int, eos_token: list[int] | None) -> Any:
    """llguidance's tokenizer from the serialised `tokenizers` pipeline, as `llguidance.hf.from_tokenizer`
    builds it, for transformers' fast tokenizers and `FolderTokenizer` alike (llguidance.hf imports
    transformers and accepts only its class)."""
    backend = copy.copy(tokenizer.backend_tokenizer)
    backend.no_padding()
    backend.no_truncation()
    eos = eos_token if eos_token is not None else tokenizer.eos_token_id
    return llguidance.LLTokenizer(backend.to_str(), n_vocab=n_vocab, eos_token=eos)


def _one_line(problem: str) -> str:
    """llguidance's message on one line, without the Lark grammar's text it quotes (our tool grammar,
    noise to the client); regex errors span lines that matter."""
    lines = itertools.takewhile(lambda line: not _QUOTED_GRAMMAR.match(line), problem.splitlines())
    return _GRAMMAR_POSITION.sub("", " ".join(" ".join(lines).split()))[:500]


def _limits() -> llguidance.LLParserLimits:
    """Bounds on what one guide may cost: a guide over them is refused (a 400), never a stall.

    llguidance's defaults already cap the lexer's work at build and per step (what that allows in
    time: docs/engine.md, "Measurements behind the code") and the parser's items per step; the grammar
    size is capped lower than its 500,000 symbols, since schemas come from clients (the gateway also
    caps their text at 64 KiB). Errors leave without the grammar's text, which would be noise in the
    client's 400.
    """
    return llguidance.LLParserLimits(max_grammar_size=200_000, verbose_errors=False)


def mask_guided_rows(logits: torch.Tensor, guides: Sequence[GuideMatcher | None]) -> torch.Tensor:
    """`logits` with each guided row's disallowed tokens at -inf (a copy; unguided rows unchanged).

    The bitmask is filled only for the guided rows, so a batch pays for the requests that ask.
    """
    # logits: [N, V]
    rows = [row for row, guide in enumerate(guides) if guide is not None]
    if not rows:
        return logits
    vocab = logits.shape[-1]
    bitmask = torch.zeros(len(rows), (vocab + 31) // 32, dtype=torch.int32)  # [G, W]
    for slot, row in enumerate(rows):
        guide = guides[row]
        assert guide is not None
        guide.fill_bitmask(bitmask[slot])
    masked = logits.clone()
    index = torch.tensor(rows, device=logits.device)
    masked[index] = masked[index].masked_fill(~unpack_bitmask(bitmask, vocab).to(logits.device), float("-inf"))
    return masked


def unpack_bitmask(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[G, W] int32 words to [G, vocab_size] booleans (True: allowed)."""
    bits = (bitmask.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1  # [G, W, 32]
    return bits.view(bitmask.shape[0], -1)[:, :vocab_size].bool()
