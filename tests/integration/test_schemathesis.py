"""Property-based conformance of the gateway to its own /openapi.json, with schemathesis.

Schemathesis reads the schema the running gateway publishes, generates valid and invalid request
bodies for each /v1 operation, sends them to the live cluster and checks every answer: never a 5xx,
only documented status codes and content types, bodies that validate against the documented schema
(OpenAI's response shapes, or the `{"error": {...}}` shape for every error status), and invalid
bodies refused with a 4xx. OpenAPI 3.1 cannot describe the events inside a `text/event-stream`,
so this test checks those itself against the chunk schemas.

The cases come from schemathesis' Hypothesis strategies under a plain `@given` rather than from its
pytest plugin's `from_fixture`, whose lazy loader relies on pytest internals (`Function._nodeid`)
that pytest 9.2 no longer has. Generation is derandomized, so every run sends the same cases.

Schemathesis reads only the first 20 events of a stream unless told otherwise; this test reads
streams whole (up to MAX_STREAM_EVENTS), since a stream cut short has no `[DONE]` to check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.conftest import CHAT_MODEL, EMBEDDING_MODEL
from tests.integration.processes import Cluster
from tokenyard.protocol.openai import ChatCompletionChunk, CompletionResponse, ErrorResponse

# Enough tokens to exercise generation, few enough that each generated request returns at once on
# the tiny model. OpenAI has no such cap, so the test bounds its cases rather than the schema.
MAX_GENERATED_TOKENS = 4
# Events read from one stream: more than the capped cases send (n up to 128 choices of a few prompts,
# each a few tokens). Schemathesis' default of 20 cut any longer stream before its `[DONE]`, which
# failed the check at random: a choice's token that is only part of a UTF-8 character sends no
# event, so the same request sends a varying number of events.
MAX_STREAM_EVENTS = 100_000
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    # The model it serves: the schema only says "a string", so most generated names are unknown
    # (a 404); half of the valid cases are pointed at the real model to reach the workers.
    model: str | None = None
    # What each event of its stream must be, for the operations that stream.
    chunk: type[BaseModel] | None = None


COMPLETIONS = Operation("POST", "/v1/completions", CHAT_MODEL, CompletionResponse)
OPERATIONS = [
    Operation("GET", "/v1/models"),
    Operation("POST", "/v1/chat/completions", CHAT_MODEL, ChatCompletionChunk),
    COMPLETIONS,
    Operation("POST", "/v1/embeddings", EMBEDDING_MODEL),
]
EXAMPLES = {GenerationMode.POSITIVE: 60, GenerationMode.NEGATIVE: 30}
CASES = [
    pytest.param(operation, mode, id=f"{operation.method} {operation.path} {mode}")
    for operation in OPERATIONS
    for mode in EXAMPLES
    # GET /v1/models takes no input at all, so there is no invalid request to generate.
    if not (operation.method == "GET" and mode is GenerationMode.NEGATIVE)
]


@dataclass(frozen=True)
class Steering:
    """Valid changes to a valid case, drawn by Hypothesis, that lead it past the 404 and the
    request's validation into the workers and the streaming code."""

    use_real_model: bool
    stream: bool


@pytest.fixture(scope="module")
def gateway_schema(cluster: Cluster) -> Any:
    config = schemathesis.Config.from_dict({"max-stream-events": MAX_STREAM_EVENTS})
    return schemathesis.openapi.from_url(f"{cluster.gateway_url}/openapi.json", config=config)


def cap_generation(body: dict[str, Any]) -> None:
    """Bound the work one generated request asks of the tiny model (see MAX_GENERATED_TOKENS).

    An absent (chat) or null `max_tokens` means "up to the context", which times `n` up to 128 is
    minutes of CPU (and a stream longer than schemathesis reads): the conformance suite covers
    that default, so here it is capped too.
    """
    for field in ("max_tokens", "max_completion_tokens"):
        value = body.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > MAX_GENERATED_TOKENS:
            body[field] = MAX_GENERATED_TOKENS
    generates = "messages" in body or "prompt" in body
    if generates and body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
        body["max_tokens"] = MAX_GENERATED_TOKENS


def prepare(case: schemathesis.Case, operation: Operation, mode: GenerationMode, steering: Steering) -> None:
    """Cap the case's generation and steer valid cases; invalid ones are left as generated, since
    the field steering would set may be the very one made invalid."""
    if not isinstance(case.body, dict):
        return
    cap_generation(case.body)
    if mode is not GenerationMode.POSITIVE:
        return
    if operation.model is not None and steering.use_real_model:
        case.body["model"] = operation.model
    if operation.chunk is not None and steering.stream:
        case.body["stream"] = True


def check_event_stream(response: schemathesis.Response, chunk: type[BaseModel]) -> None:
    """Every event a chunk (or, last, an error), then exactly one `[DONE]`, at the end."""
    text = response.text
    events = [line.removeprefix("data: ") for line in text.split("\n\n") if line]
    # Cut short by the request timeout or the event cap: the stream's end was never read.
    assert not response.stream_cut_short, f"stopped reading the stream after {len(events)} events"
    assert events and events[-1] == "[DONE]", text[-300:]
    assert all(line.startswith("data: ") for line in text.split("\n\n") if line), text[:300]
    for event in events[:-1]:
        payload = json.loads(event)
        model = ErrorResponse if "error" in payload else chunk
        model.model_validate(payload)
    assert all("error" not in json.loads(event) for event in events[:-2]), "an error event must be the last"


@pytest.mark.parametrize(("operation", "mode"), CASES)
def test_gateway_matches_its_openapi_schema(gateway_schema: Any, operation: Operation, mode: GenerationMode) -> None:
    strategy = gateway_schema[operation.path][operation.method].as_strategy(generation_mode=mode)

    @given(case=strategy, steering=st.builds(Steering, st.booleans(), st.booleans()))
    @settings(
        max_examples=EXAMPLES[mode],
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    def conforms(case: schemathesis.Case, steering: Steering) -> None:
        prepare(case, operation, mode, steering)
        call_and_check(case, operation)

    conforms()


def call_and_check(case: schemathesis.Case, operation: Operation) -> None:
    response = case.call_and_validate(checks=CHECKS, timeout=30)
    if operation.chunk is not None and response.headers.get("content-type", [""])[0].startswith("text/event-stream"):
        check_event_stream(response, operation.chunk)


def test_a_long_stream_is_read_to_its_end(gateway_schema: Any) -> None:
    """More events than schemathesis reads by default: 25 choices of one token each send at least
    25 events (each choice's finish), then `[DONE]`."""
    body = {"model": CHAT_MODEL, "prompt": "0", "n": 25, "max_tokens": 1, "stream": True}
    call_and_check(gateway_schema[COMPLETIONS.path][COMPLETIONS.method].Case(body=body), COMPLETIONS)
