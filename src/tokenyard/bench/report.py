"""Benchmark reports: one JSON document for scripts, one fixed-width table for people.

JSON shape (stable; benchmarks/compare.py and the tests read it):
    {"url", "model", "endpoint": "chat"|"completions", "max_tokens", "ignore_eos", "temperature",
     "num_prompts", "levels": [{"concurrency", "requests", "completed", "errors", "error_messages",
     "duration_s", "output_tokens", "prompt_tokens", "output_tok_per_s", "requests_per_s",
     "token_count_source", "ttft_ms", "itl_ms", "tpot_ms", "latency_ms"}]}
where each `*_ms` is {"mean", "p50", "p90", "p99"} in milliseconds (null when nothing was measured).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokenyard.bench.loadgen import BenchSettings
from tokenyard.bench.stats import LevelSummary

_COLUMNS = (
    ("CONC", 5),
    ("REQS", 5),
    ("ERR", 4),
    ("TOK/S", 8),
    ("REQ/S", 7),
    ("TTFT p50/p90/p99 ms", 22),
    ("ITL p50/p90/p99 ms", 20),
    ("TPOT p50 ms", 11),
    ("LATENCY p50/p99 s", 18),
)


def report_dict(settings: BenchSettings, summaries: Sequence[LevelSummary]) -> dict[str, Any]:
    """The whole run as plain JSON-ready data."""
    return {
        "url": settings.base_url,
        "model": settings.model,
        "endpoint": "chat" if settings.chat else "completions",
        "max_tokens": settings.max_tokens,
        "ignore_eos": settings.ignore_eos,
        "temperature": settings.temperature,
        "num_prompts": len(settings.prompts),
        "levels": [summary.to_dict() for summary in summaries],
    }


def _fmt(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def _triple(dist: dict[str, float | None]) -> str:
    return "/".join(_fmt(dist.get(key)) for key in ("p50", "p90", "p99"))


def _row(summary: LevelSummary) -> list[str]:
    latency = summary.latency_ms
    return [
        str(summary.concurrency),
        str(summary.requests),
        str(summary.errors),
        f"{summary.output_tok_per_s:.1f}",
        f"{summary.requests_per_s:.2f}",
        _triple(summary.ttft_ms),
        _triple(summary.itl_ms),
        _fmt(summary.tpot_ms.get("p50")),
        f"{_fmt(latency.get('p50'), 0.001, 2)}/{_fmt(latency.get('p99'), 0.001, 2)}",
    ]


def _notes(summaries: Sequence[LevelSummary]) -> list[str]:
    notes = []
    sources = {s.token_count_source for s in summaries}
    if sources != {"usage"}:
        notes.append(
            "note: the server sent no usage for some requests; their tokens were counted as text chunks "
            "(one token per chunk assumed)"
        )
    for summary in summaries:
        for message in summary.error_messages:
            notes.append(f"error at concurrency {summary.concurrency}: {message}")
    return notes


def render_table(settings: BenchSettings, summaries: Sequence[LevelSummary]) -> str:
    """A header line, one row per concurrency level, then notes on token counting and errors."""
    mode = "chat" if settings.chat else "completions"
    lines = [
        f"{settings.base_url}  model={settings.model}  {mode}  max_tokens={settings.max_tokens}"
        f"{'  ignore_eos' if settings.ignore_eos else ''}  prompts={len(settings.prompts)}",
        "  ".join(name.rjust(width) for name, width in _COLUMNS),
    ]
    for summary in summaries:
        lines.append("  ".join(cell.rjust(width) for cell, (_, width) in zip(_row(summary), _COLUMNS, strict=True)))
    return "\n".join(lines + _notes(summaries))
