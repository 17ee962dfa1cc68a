"""Tables for benchmarks/compare.py: absolute figures per system and level, then tokenyard's ratios.

At each concurrency, tokenyard's output tok/s over llama-server's and over the FastChat-style
baseline's must reach a floor, and its TTFT p50 must stay under a multiple of llama-server's: the
floors over llama-server and the TTFT bounds at 16 and 64 are issue 15's (plain defaults), the
floors over the baseline and the TTFT bound at 1 issue 3's.
"""

from __future__ import annotations

from typing import Any

# concurrency: (tok/s vs llama-server at least, tok/s vs baseline at least, TTFT p50 vs llama-server at most)
TARGETS: dict[int, tuple[float, float, float]] = {1: (1.6, 3.0, 2.0), 16: (2.5, 8.0, 1.0), 64: (3.0, 10.0, 1.0)}


def _level(systems: dict[str, Any], name: str, concurrency: str) -> dict[str, Any] | None:
    """A level that ran and produced figures, or None (system not run, bench failed, every request failed)."""
    level = systems.get(name, {}).get("levels", {}).get(concurrency)
    if not level or "failed" in level or not level.get("completed"):
        return None
    return dict(level)


def _tok_s(level: dict[str, Any] | None) -> float | None:
    return None if level is None else float(level["output_tok_per_s"])


def _ttft_p50(level: dict[str, Any] | None) -> float | None:
    value = None if level is None else level["ttft_ms"]["p50"]
    return None if value is None else float(value)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def tokenyard_ratios(systems: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per concurrency: tokenyard's ratios to each peer, the issue's targets, and whether each is met."""
    ratios: dict[str, dict[str, Any]] = {}
    for concurrency in systems.get("tokenyard", {}).get("levels", {}):
        ours = _level(systems, "tokenyard", concurrency)
        llama = _level(systems, "llama-server", concurrency)
        base = _level(systems, "baseline", concurrency)
        if ours is None:
            continue
        row: dict[str, Any] = {
            "tok_s_vs_llama_server": _ratio(_tok_s(ours), _tok_s(llama)),
            "tok_s_vs_baseline": _ratio(_tok_s(ours), _tok_s(base)),
            "ttft_p50_vs_llama_server": _ratio(_ttft_p50(ours), _ttft_p50(llama)),
        }
        target = TARGETS.get(int(concurrency))
        if target is not None:
            row["targets"] = {
                "tok_s_vs_llama_server_min": target[0],
                "tok_s_vs_baseline_min": target[1],
                "ttft_p50_vs_llama_server_max": target[2],
            }
            row["met"] = _met(row, target)
        ratios[concurrency] = row
    return ratios


def _met(row: dict[str, Any], target: tuple[float, float, float]) -> dict[str, bool | None]:
    def at_least(value: float | None, floor: float) -> bool | None:
        return None if value is None else value >= floor

    ttft = row["ttft_p50_vs_llama_server"]
    return {
        "tok_s_vs_llama_server": at_least(row["tok_s_vs_llama_server"], target[0]),
        "tok_s_vs_baseline": at_least(row["tok_s_vs_baseline"], target[1]),
        "ttft_p50_vs_llama_server": None if ttft is None else ttft <= target[2],
    }


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_results(systems: dict[str, Any]) -> str:
    """One row per system and level: throughput, latency percentiles, errors."""
    header = (
        f"{'system':<14}{'conc':>5}{'reqs':>6}{'err':>5}{'tok/s':>9}{'TTFT p50':>10}{'TTFT p99':>10}"
        f"{'ITL p50':>9}{'ITL p99':>9}{'TPOT p50':>10}  tokens"
    )
    lines = [header, "-" * len(header)]
    for name, result in systems.items():
        for concurrency, level in result["levels"].items():
            if "failed" in level:
                lines.append(f"{name:<14}{concurrency:>5}  bench failed: {level['failed'][:80]}")
                continue
            ttft, itl, tpot = level["ttft_ms"], level["itl_ms"], level["tpot_ms"]
            lines.append(
                f"{name:<14}{concurrency:>5}{level['requests']:>6}{level['errors']:>5}"
                f"{level['output_tok_per_s']:>9.1f}{_num(ttft['p50']):>10}{_num(ttft['p99']):>10}"
                f"{_num(itl['p50']):>9}{_num(itl['p99']):>9}{_num(tpot['p50']):>10}  {level['token_count_source']}"
            )
    lines.append("(latencies in ms; tok/s = output tokens of all requests / wall time of the level)")
    return "\n".join(lines)


_RATIO_COLUMNS = (
    # (ratio key, target key, comparison shown beside the target)
    ("tok_s_vs_llama_server", "tok_s_vs_llama_server_min", ">="),
    ("tok_s_vs_baseline", "tok_s_vs_baseline_min", ">="),
    ("ttft_p50_vs_llama_server", "ttft_p50_vs_llama_server_max", "<="),
)


def _cell(row: dict[str, Any], key: str, target_key: str, op: str) -> str:
    value, target = row[key], row.get("targets", {}).get(target_key)
    shown = "-" if value is None else f"{value:.2f}x"
    if target is None:
        return shown
    met = row["met"][key]
    mark = "?" if met is None else ("ok" if met else "MISS")
    return f"{shown} ({op}{target:g}x {mark})"


def render_ratios(ratios: dict[str, dict[str, Any]]) -> str:
    """tokenyard's ratios with issue 3's targets beside them ("?" where a peer's figure is missing)."""
    lines = [
        "tokenyard ratios (targets in brackets: issue 15 against llama-server, issue 3 against the baseline)",
        f"{'conc':>5}  {'tok/s vs llama-server':<26}{'tok/s vs baseline':<26}TTFT p50 vs llama-server",
    ]
    for concurrency, row in ratios.items():
        cells = [_cell(row, *column) for column in _RATIO_COLUMNS]
        lines.append(f"{concurrency:>5}  {cells[0]:<26}{cells[1]:<26}{cells[2]}")
    return "\n".join(lines)
