"""Benchmark statistics on hand-made timings: percentiles, ITL/TPOT, tok/s over the run, errors."""

from __future__ import annotations

import pytest

from tokenyard.bench.stats import RequestResult, distribution_ms, percentile, summarize, token_count_source


def request(start: float, chunks: list[float], end: float, usage: int | None = None) -> RequestResult:
    return RequestResult(start=start, end=end, chunk_times=chunks, usage_completion_tokens=usage)


def failed(start: float, end: float, message: str) -> RequestResult:
    return RequestResult(start=start, end=end, error=message)


@pytest.mark.parametrize(
    ("pct", "expected"),
    [(0, 1.0), (50, 3.0), (90, 4.6), (99, 4.96), (100, 5.0)],
)
def test_percentile_interpolates_linearly_like_numpy(pct: float, expected: float) -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], pct) == pytest.approx(expected)


def test_percentile_of_one_value_and_of_none() -> None:
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_percentile_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], 101)


def test_distribution_is_in_milliseconds() -> None:
    dist = distribution_ms([0.010, 0.020, 0.030])
    assert dist == {"mean": 20.0, "p50": 20.0, "p90": 28.0, "p99": 29.8}
    assert distribution_ms([]) == {"mean": None, "p50": None, "p90": None, "p99": None}


def test_ttft_itl_and_tpot_of_one_request() -> None:
    result = request(start=10.0, chunks=[10.5, 10.6, 10.8, 11.1], end=11.2)
    assert result.ttft == pytest.approx(0.5)
    assert result.itls() == pytest.approx([0.1, 0.2, 0.3])
    assert result.tpot() == pytest.approx(0.6 / 3)
    assert result.latency == pytest.approx(1.2)


def test_tpot_uses_usage_tokens_when_chunks_carry_several() -> None:
    # 2 chunks but 5 tokens: 4 tokens were decoded after the first in 0.4 s.
    result = request(start=0.0, chunks=[0.1, 0.5], end=0.5, usage=5)
    assert result.output_tokens == 5
    assert result.tpot() == pytest.approx(0.1)


def test_single_token_request_has_no_itl_or_tpot() -> None:
    result = request(start=0.0, chunks=[0.2], end=0.3)
    assert result.itls() == []
    assert result.tpot() is None


def test_tok_per_s_is_over_the_level_wall_time_not_summed_per_request() -> None:
    # Two overlapping requests of 10 tokens each, from t=0 to t=2: 20 tokens / 2 s.
    results = [
        request(0.0, [0.1 * i for i in range(1, 11)], 1.0, usage=10),
        request(0.5, [0.5 + 0.15 * i for i in range(1, 11)], 2.0, usage=10),
    ]
    summary = summarize(concurrency=2, results=results)
    assert summary.duration_s == pytest.approx(2.0)
    assert summary.output_tokens == 20
    assert summary.output_tok_per_s == pytest.approx(10.0)
    assert summary.requests_per_s == pytest.approx(1.0)
    assert summary.ttft_ms["p50"] == pytest.approx(125.0)  # 100 ms and 150 ms
    # ITLs pooled over both requests: nine gaps of 100 ms and nine of 150 ms.
    assert summary.itl_ms["mean"] == pytest.approx(125.0)
    assert summary.itl_ms["p99"] == pytest.approx(150.0)
    assert summary.token_count_source == "usage"


def test_failed_requests_count_as_errors_not_tokens() -> None:
    results = [
        request(0.0, [0.5, 1.0], 1.0, usage=2),
        failed(0.0, 0.2, "HTTP 503: no healthy worker"),
        failed(0.1, 0.3, "HTTP 503: no healthy worker"),
        failed(0.2, 4.0, "ReadTimeout: timed out"),
    ]
    summary = summarize(concurrency=4, results=results)
    assert (summary.requests, summary.completed, summary.errors) == (4, 1, 3)
    assert summary.error_messages == ["HTTP 503: no healthy worker", "ReadTimeout: timed out"]
    assert summary.output_tokens == 2
    # The run lasted until the slow failure ended: failures still take the clients' time.
    assert summary.output_tok_per_s == pytest.approx(0.5)
    assert summary.latency_ms["p50"] == pytest.approx(1000.0)


def test_token_count_source_says_where_counts_came_from() -> None:
    with_usage = request(0.0, [0.1], 0.2, usage=1)
    without = request(0.0, [0.1, 0.2], 0.3)
    assert token_count_source([with_usage]) == "usage"
    assert token_count_source([without]) == "chunks"
    assert token_count_source([with_usage, without]) == "mixed"
    assert without.output_tokens == 2


def test_empty_level_summarises_to_zeroes() -> None:
    summary = summarize(concurrency=1, results=[])
    assert summary.output_tok_per_s == 0.0
    assert summary.ttft_ms["p50"] is None
