"""The embeddings response: written by pydantic, with the very floats the worker computed."""

from __future__ import annotations

import json
import struct

from tokenyard.gateway.serving_embedding import PydanticJSONResponse
from tokenyard.protocol.openai import EmbeddingData, EmbeddingResponse, EmbeddingUsage


def test_the_response_body_is_the_models_json_with_exact_floats() -> None:
    # float32 values seen as Python floats, as the worker sends them: 17 significant digits each
    vector = [struct.unpack("<f", struct.pack("<f", x / 7))[0] for x in range(-5, 5)] + [1e-8, -3.0e-5]
    response = EmbeddingResponse(
        data=[EmbeddingData(index=0, embedding=vector)],
        model="all-minilm-l6-v2",
        usage=EmbeddingUsage(prompt_tokens=3, total_tokens=3),
    )
    rendered = PydanticJSONResponse(response, headers={"x-request-id": "r1"})
    assert rendered.media_type == "application/json"
    assert rendered.headers["x-request-id"] == "r1"
    assert json.loads(rendered.body) == response.model_dump()
    assert json.loads(rendered.body)["data"][0]["embedding"] == vector  # every float round-trips exactly


def test_plain_content_still_renders_as_json() -> None:
    assert json.loads(PydanticJSONResponse({"a": [1.5]}).body) == {"a": [1.5]}
