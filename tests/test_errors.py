"""Typed errors and their OpenAI shape, both ways across a service boundary."""

from __future__ import annotations

from tokenyard.errors import (
    ContextLengthExceededError,
    ModelNotFoundError,
    NoHealthyWorkerError,
    OverloadedError,
    UpstreamError,
    WorkerError,
    error_from_body,
)


def test_openai_shape() -> None:
    body = ModelNotFoundError("gpt-9").to_dict()
    assert body == {
        "error": {
            "message": "The model `gpt-9` does not exist.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


def test_statuses() -> None:
    context = ContextLengthExceededError(prompt_tokens=10, max_tokens=5, context_length=12, param="max_tokens")
    assert (context.status_code, context.code) == (400, "context_length_exceeded")
    assert "12 tokens" in context.message and "15 tokens" in context.message
    assert OverloadedError("busy").status_code == 429
    assert NoHealthyWorkerError("none").status_code == 503


def test_round_trip_keeps_status_type_param_code() -> None:
    original = ContextLengthExceededError(prompt_tokens=1, max_tokens=9, context_length=5, param="max_tokens")
    rebuilt = error_from_body(original.status_code, original.to_dict(), retry_after=None)
    assert isinstance(rebuilt, UpstreamError)
    assert rebuilt.to_dict() == original.to_dict()
    assert rebuilt.status_code == 400


def test_unshaped_upstream_body_becomes_worker_error() -> None:
    rebuilt = error_from_body(500, "<html>oops</html>")
    assert isinstance(rebuilt, WorkerError)
    assert rebuilt.status_code == 502


def test_retry_after_travels() -> None:
    rebuilt = error_from_body(429, OverloadedError("busy").to_dict(), retry_after=4.0)
    assert rebuilt.retry_after == 4.0 and rebuilt.status_code == 429
