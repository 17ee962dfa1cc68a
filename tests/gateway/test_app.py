"""The gateway app on its own: routes exist, OpenAPI documents them, errors keep OpenAI's shape."""

from __future__ import annotations

import httpx

from tokenyard.config import GatewayConfig, Settings
from tokenyard.gateway.app import create_app


def client() -> httpx.AsyncClient:
    app = create_app(Settings(gateway=GatewayConfig(controller="http://127.0.0.1:9")))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


async def test_openapi_documents_the_v1_routes() -> None:
    async with client() as http:
        schema = (await http.get("/openapi.json")).json()
    for path in ("/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        assert path in schema["paths"]
    responses = schema["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert {"200", "400", "404", "429", "503"} <= set(responses)


async def test_validation_happens_before_any_upstream_call() -> None:
    async with client() as http:
        response = await http.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages"


async def test_unknown_path_is_an_openai_shaped_404() -> None:
    async with client() as http:
        response = await http.get("/v1/nothing")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


async def test_health_is_public_and_cheap() -> None:
    async with client() as http:
        assert (await http.get("/health")).json() == {"status": "ok"}


async def test_json_body_is_read_whatever_the_content_type() -> None:
    async with client() as http:
        # What `curl -d` sends: a form content type. The body is still read as JSON.
        response = await http.post(
            "/v1/chat/completions",
            content=b'{"model": "m", "messages": []}',
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages"


async def test_openapi_documents_only_statuses_the_gateway_sends() -> None:
    async with client() as http:
        schema = (await http.get("/openapi.json")).json()
    responses = schema["paths"]["/v1/chat/completions"]["post"]["responses"]
    # Validation failures are OpenAI-shaped 400s, never FastAPI's 422.
    assert "422" not in responses
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert {"502", "503", "504"} <= set(responses)
    assert responses["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    assert "Retry-After" in responses["429"]["headers"]
    assert "text/event-stream" in responses["200"]["content"]
    assert "text/event-stream" not in schema["paths"]["/v1/embeddings"]["post"]["responses"]["200"]["content"]


async def test_invalid_unicode_is_a_400_naming_the_field() -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}'
    async with client() as http:
        response = await http.post("/v1/chat/completions", content=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages.0.content"
    assert "Unicode" in response.json()["error"]["message"]


async def test_union_member_names_stay_out_of_param() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": [{"type": "image", "text": "x"}]}]}
    async with client() as http:
        response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages.0.content.0.type"
