"""What constrained decoding costs per request and per token, for each installed grammar library.

    .venv/bin/python benchmarks/guided_overhead.py [--model smollm2-135m-instruct] [--libs llguidance,xgrammar,outlines]

On the model's tokenizer it measures, for a typical JSON schema (a nested object with strings,
integers, an enum and an array): the one-time tokenizer set-up, the schema's compile time (cold, no
cache), and per generated token the time to fill the allowed-token bitmask, to apply it to a [1, V]
float32 logits row, and to advance the matcher; plus the bitmask fill for a batch of 8 rows. The
tokens fed are the model tokenizer's own encoding of a valid instance, so every step is one a real
generation could take. Libraries that are not installed are skipped (tokenyard installs only
llguidance; the others were measured with `pip install --no-deps --target DIR` and PYTHONPATH=DIR).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import AutoTokenizer

from tokenyard.config import load_settings
from tokenyard.engine.guided import Guide, GuideCompiler, mask_guided_rows, unpack_bitmask
from tokenyard.models import resolve_model
from tokenyard.protocol.tool_calls import FunctionSpec, tool_call_grammar

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "email": {"type": "string"},
        "role": {"type": "string", "enum": ["admin", "editor", "viewer"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "age", "email", "role", "tags", "address"],
    "additionalProperties": False,
}
INSTANCE = {
    "name": "Ada Lovelace",
    "age": 36,
    "email": "ada@example.org",
    "role": "admin",
    "tags": ["math", "engines", "poetry"],
    "address": {"city": "London", "zip": "W1 2AB"},
}
BATCH = 8


def _ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000


def apply_bitmask(logits: torch.Tensor, bitmask: torch.Tensor) -> None:
    """The unpack-and-fill tokenyard's engine uses (the libraries' own kernels need torch.compile)."""
    logits.masked_fill_(~unpack_bitmask(bitmask, logits.shape[-1]), float("-inf"))


class Harness:
    """One library's tokenizer, compiler and matcher behind four calls."""

    name = ""

    def compile(self) -> Any: ...

    def matcher(self, compiled: Any) -> Any: ...

    def fill(self, matcher: Any, bitmask: torch.Tensor, row: int) -> None: ...

    def advance(self, matcher: Any, token: int) -> bool: ...


class LLGuidance(Harness):
    name = "llguidance"

    def __init__(self, hf: Any) -> None:
        import llguidance
        import llguidance.hf

        self.ll = llguidance
        self.tokenizer = llguidance.hf.from_tokenizer(hf)

    def compile(self) -> Any:
        grammar = self.ll.LLMatcher.grammar_from_json_schema(json.dumps(SCHEMA))
        return self.ll.LLMatcher(self.tokenizer, grammar)  # the matcher is the compiled form; copies are cheap

    def matcher(self, compiled: Any) -> Any:
        return compiled.deep_copy()

    def fill(self, matcher: Any, bitmask: torch.Tensor, row: int) -> None:
        view = bitmask[row]
        matcher.unsafe_compute_mask_ptr(view.data_ptr(), view.numel() * 4)

    def advance(self, matcher: Any, token: int) -> bool:
        return bool(matcher.consume_token(token))


class XGrammar(Harness):
    name = "xgrammar"

    def __init__(self, hf: Any) -> None:
        import xgrammar

        self.xgr = xgrammar
        info = xgrammar.TokenizerInfo.from_huggingface(hf, vocab_size=len(hf))
        self.compiler = xgrammar.GrammarCompiler(info, max_threads=1, cache_enabled=False)

    def compile(self) -> Any:
        return self.compiler.compile_json_schema(json.dumps(SCHEMA), any_whitespace=False, separators=(",", ":"))

    def matcher(self, compiled: Any) -> Any:
        return self.xgr.GrammarMatcher(compiled)

    def fill(self, matcher: Any, bitmask: torch.Tensor, row: int) -> None:
        matcher.fill_next_token_bitmask(bitmask, row)

    def advance(self, matcher: Any, token: int) -> bool:
        return bool(matcher.accept_token(token))


class Outlines(Harness):
    name = "outlines-core"

    def __init__(self, hf: Any) -> None:
        import outlines_core

        self.oc = outlines_core
        # Byte-level BPE: map each token back to its bytes ("Ġ" -> " "), as outlines does.
        decoder = {c: b for b, c in _bytes_to_unicode().items()}
        tokens: dict[Any, list[int]] = {}
        for token, token_id in hf.get_vocab().items():
            if token_id == hf.eos_token_id or token in hf.all_special_tokens:
                continue
            raw = bytes(decoder[c] for c in token) if all(c in decoder for c in token) else token.encode()
            tokens.setdefault(raw, []).append(token_id)
        self.vocabulary = outlines_core.Vocabulary(hf.eos_token_id, tokens)

    def compile(self) -> Any:
        regex = self.oc.json_schema.build_regex_from_schema(json.dumps(SCHEMA))
        return self.oc.Index(regex, self.vocabulary)

    def matcher(self, compiled: Any) -> Any:
        return self.oc.Guide(compiled)

    def fill(self, matcher: Any, bitmask: torch.Tensor, row: int) -> None:
        view = bitmask[row]
        matcher.write_mask_into(view.data_ptr(), view.numel(), 4)

    def advance(self, matcher: Any, token: int) -> bool:
        matcher.advance(token)
        return True


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-to-character table that byte-level BPE vocabularies are written in."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


HARNESSES: dict[str, Callable[[Any], Harness]] = {
    "llguidance": LLGuidance,
    "xgrammar": XGrammar,
    "outlines": Outlines,
}


def measure(harness_type: Callable[[Any], Harness], hf: Any, repeats: int) -> dict[str, float | str]:
    started = time.perf_counter()
    harness = harness_type(hf)
    setup = time.perf_counter() - started
    vocab = len(hf)
    width = (vocab + 31) // 32
    compiles, cold_starts = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        compiled = harness.compile()
        compiles.append(time.perf_counter() - started)
        # Some libraries build their lexer lazily: the first mask of a fresh grammar pays for it.
        harness.fill(harness.matcher(compiled), torch.full((1, width), -1, dtype=torch.int32), 0)
        cold_starts.append(time.perf_counter() - started)
    compiled = harness.compile()
    tokens = hf(json.dumps(INSTANCE, separators=(",", ":")), add_special_tokens=False)["input_ids"]
    fills, applies, advances = [], [], []
    for _ in range(repeats):
        matcher = harness.matcher(compiled)
        bitmask = torch.full((1, width), -1, dtype=torch.int32)
        for token in tokens:
            logits = torch.randn(1, vocab)
            t0 = time.perf_counter()
            harness.fill(matcher, bitmask, 0)
            t1 = time.perf_counter()
            apply_bitmask(logits, bitmask)
            t2 = time.perf_counter()
            if not harness.advance(matcher, token):
                return {"library": harness.name, "error": f"refused token {token} of a valid instance"}
            t3 = time.perf_counter()
            assert logits[0, token] != float("-inf"), "the mask blocked a valid token"
            fills.append(t1 - t0)
            applies.append(t2 - t1)
            advances.append(t3 - t2)
    batch_fills = []
    matchers = [harness.matcher(compiled) for _ in range(BATCH)]
    bitmask = torch.full((BATCH, width), -1, dtype=torch.int32)
    for token in tokens:
        t0 = time.perf_counter()
        for row, matcher in enumerate(matchers):
            harness.fill(matcher, bitmask, row)
        batch_fills.append(time.perf_counter() - t0)
        for matcher in matchers:
            harness.advance(matcher, token)
    return {
        "library": harness.name,
        "tokenizer_setup_ms": setup * 1000,
        "compile_ms": _ms(compiles),
        "compile_and_first_mask_ms": _ms(cold_starts),
        "mask_ms_per_token": _ms(fills),
        "mask_ms_mean": statistics.mean(fills) * 1000,
        "mask_ms_max": max(fills) * 1000,
        "apply_ms_per_token": _ms(applies),
        "advance_ms_per_token": _ms(advances),
        f"mask_ms_batch{BATCH}": _ms(batch_fills),
        "tokens": len(tokens),
    }


def measure_engine_path(hf: Any, repeats: int) -> dict[str, float | str]:
    """tokenyard's own path (llguidance): a sampling step's `mask_guided_rows` over 8 guided rows, and
    an "auto" tool-call grammar's cold compile (free text or a call of one function)."""
    compiler = GuideCompiler(hf, vocab_size=len(hf), eos_token_ids={hf.eos_token_id})
    guide = Guide("json_schema", json.dumps(SCHEMA))
    compiler.matcher(guide)  # the tokenizer set-up and the compile, out of the timing
    tokens = hf(json.dumps(INSTANCE), add_special_tokens=False)["input_ids"]
    steps = []
    for _ in range(repeats):
        matchers = [compiler.matcher(guide) for _ in range(BATCH)]
        for token in tokens:
            logits = torch.randn(BATCH, len(hf))
            started = time.perf_counter()
            mask_guided_rows(logits, matchers)
            steps.append(time.perf_counter() - started)
            for matcher in matchers:
                matcher.advance(token)
    tool_compiles = []
    for i in range(repeats):  # a fresh name each time, so the LRU cannot answer
        grammar = tool_call_grammar([FunctionSpec(f"f{i}", SCHEMA)], mode="auto", parallel=True)
        started = time.perf_counter()
        mask_guided_rows(torch.randn(1, len(hf)), [compiler.matcher(Guide("lark", grammar))])
        tool_compiles.append(time.perf_counter() - started)
    return {
        "library": "tokenyard (llguidance)",
        f"mask_guided_rows_ms_batch{BATCH}": _ms(steps),
        "auto_tool_grammar_compile_and_first_mask_ms": _ms(tool_compiles),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--libs", default=",".join(HARNESSES))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = resolve_model(args.model, load_settings().home_dir()).path
    hf = AutoTokenizer.from_pretrained(folder)
    print(f"model {args.model}: vocabulary {len(hf)}; schema {len(json.dumps(SCHEMA))} bytes")
    for name in args.libs.split(","):
        try:
            result = measure(HARNESSES[name], hf, args.repeats)
        except ImportError as exc:
            result = {"library": name, "error": f"not installed ({exc.name})"}
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))
    result = measure_engine_path(hf, args.repeats)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
