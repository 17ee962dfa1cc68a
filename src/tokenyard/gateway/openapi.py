"""What /openapi.json says each /v1 route answers: exactly the statuses and bodies it can send.

Clients generate code from this schema and conformance tests (schemathesis) hold the gateway to it,
so every status a route can return is listed with OpenAI's error body, streams are documented as
server-sent events, and FastAPI's default 422 "HTTPValidationError" is removed: validation
failures leave as OpenAI-shaped 400s (see `tokenyard.web.install_error_handlers`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from tokenyard.protocol.openai import ErrorResponse

RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer", "minimum": 1}}
}
ERROR_STATUSES: dict[int, str] = {
    400: "Invalid request: a bad or unsupported field (`param` names it), or a prompt over the context.",
    401: "Missing or invalid API key.",
    403: "The caller's address is not allowed.",
    404: "Unknown model, or a model this key may not use.",
    429: "Rate limited, over quota or every worker busy; see Retry-After.",
    502: "A worker failed while serving the request.",
    503: "No healthy worker serves the model.",
    504: "The request did not finish within the gateway's request timeout.",
}
# OpenAPI before 3.2 reads an event stream's `schema` as the schema of each event (3.2 names it
# `itemSchema`): a server-sent event whose `data` is a JSON chunk, an error, or the final [DONE].
SSE_EVENT_SCHEMA = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}, "id": {"type": "string"}},
}
STREAM_DESCRIPTION = (
    "With `stream: true`: server-sent events, one `data: {chunk}` line per event, ending with "
    "`data: [DONE]`; an error after the stream started arrives as a final `data: {error}` event."
)


def _error(description: str, status: int) -> dict[str, Any]:
    documented: dict[str, Any] = {"model": ErrorResponse, "description": description}
    if status in (429, 503):
        documented["headers"] = RETRY_AFTER
    return documented


def error_responses(statuses: tuple[int, ...] = tuple(ERROR_STATUSES)) -> dict[int | str, dict[str, Any]]:
    return {status: _error(ERROR_STATUSES[status], status) for status in statuses}


def documented(success: type, *, streams: bool = False) -> dict[int | str, dict[str, Any]]:
    """Responses of one /v1 route: its success body (and event stream, if it streams), and OpenAI's errors."""
    ok: dict[str, Any] = {"model": success, "description": "Success."}
    if streams:
        ok["description"] = f"Success. {STREAM_DESCRIPTION}"
        ok["content"] = {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}}
    return {200: ok, **error_responses()}


def drop_validation_error_schemas(app: FastAPI) -> None:
    """Make `app.openapi()` leave out FastAPI's 422 responses and their schemas, which never occur."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        schemas = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
