"""`tokenyard bench` as a user runs it: against the live tiny-model cluster, and against nothing."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.integration.conftest import CHAT_MODEL
from tests.integration.processes import Cluster, free_port

LEVEL_KEYS = {
    "concurrency",
    "requests",
    "completed",
    "errors",
    "error_messages",
    "duration_s",
    "output_tokens",
    "output_tok_per_s",
    "token_count_source",
    "ttft_ms",
    "itl_ms",
    "tpot_ms",
    "latency_ms",
}


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokenyard", "bench", *args], capture_output=True, text=True, timeout=120
    )


def test_bench_json_report_against_the_cluster(cluster: Cluster) -> None:
    result = bench(
        "--url",
        cluster.gateway_url,
        "--model",
        CHAT_MODEL,
        "--concurrency",
        "1,3",
        "--requests",
        "4",
        "--max-tokens",
        "6",
        "--ignore-eos",
        "--format",
        "json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"] == CHAT_MODEL
    assert report["url"] == f"{cluster.gateway_url}/v1"
    assert [level["concurrency"] for level in report["levels"]] == [1, 3]
    for level in report["levels"]:
        assert set(level) >= LEVEL_KEYS
        assert (level["requests"], level["completed"], level["errors"]) == (4, 4, 0)
        # ignore_eos: every request produces exactly max_tokens, counted from the gateway's usage.
        assert level["token_count_source"] == "usage"
        assert level["output_tokens"] == 4 * 6
        # duration_s is rounded to the millisecond: a 50 ms level's rate is known to about 1 %
        low, high = 24 / (level["duration_s"] + 0.0005), 24 / max(level["duration_s"] - 0.0005, 1e-6)
        assert low - 0.01 <= level["output_tok_per_s"] <= high + 0.01
        ttft, itl, latency = level["ttft_ms"], level["itl_ms"], level["latency_ms"]
        assert 0 < ttft["p50"] <= ttft["p90"] <= ttft["p99"] <= latency["p99"]
        assert 0 <= itl["p50"] <= itl["p99"] < latency["p99"]
        assert latency["p50"] <= level["duration_s"] * 1000
    assert "concurrency 3: 4 requests" in result.stderr


def test_bench_table_names_the_columns(cluster: Cluster) -> None:
    result = bench("--url", cluster.gateway_url, "--concurrency", "2", "--requests", "2", "--max-tokens", "4")
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[1]
    assert "TOK/S" in header
    assert "TTFT p50/p90/p99 ms" in header
    assert f"model={CHAT_MODEL}" in result.stdout  # the first model listed, picked without --model


def test_bench_unknown_model_fails_cleanly(cluster: Cluster) -> None:
    result = bench("--url", cluster.gateway_url, "--model", "no-such-model", "--concurrency", "1")
    assert result.returncode == 1
    assert "warm-up request failed: HTTP 404" in result.stderr
    assert "Traceback" not in result.stderr


def test_bench_against_nothing_listening_is_one_clean_line() -> None:
    result = bench("--url", f"http://127.0.0.1:{free_port()}", "--concurrency", "1")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("tokenyard: error: cannot reach http://127.0.0.1:")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
