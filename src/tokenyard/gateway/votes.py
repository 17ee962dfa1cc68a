"""Thumbs up/down on a reply, from the chat page: `POST /v1/votes` (a tokenyard extension).

Under /v1 so the tenant's API key guards it like every other API call (the auth layer resolves the
tenant; a vote can only ever touch that tenant's conversations). A vote names the reply by the
`X-Request-ID` its response carried and is stored beside the conversation log (FastChat's votes);
with conversation logs off there is nothing to attach it to, and the answer says so.
"""

from __future__ import annotations

from typing import Literal

import anyio
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from tokenyard.errors import TokenyardError
from tokenyard.gateway.principal import principal_of
from tokenyard.governance.conversations import record_feedback
from tokenyard.store import Store

router = APIRouter(tags=["feedback"])


class VoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=200, description="the X-Request-ID of the reply's response")
    vote: Literal["up", "down"]


class VoteResponse(BaseModel):
    object: Literal["vote"] = "vote"
    request_id: str
    vote: Literal["up", "down"]


class LogsOffError(TokenyardError):
    status_code = 404
    error_type = "invalid_request_error"


@router.post("/v1/votes", include_in_schema=False)
async def vote(body: VoteRequest, request: Request) -> VoteResponse:
    store: Store | None = request.app.state.store
    if store is None or not request.app.state.settings.logs.enabled:
        raise LogsOffError(
            "Votes are kept with the conversation logs, which are off on this gateway.", code="logs_disabled"
        )
    tenant = principal_of(request).tenant
    await anyio.to_thread.run_sync(record_feedback, store, body.request_id, tenant, body.vote)
    return VoteResponse(request_id=body.request_id, vote=body.vote)
