"""The router passes a loading model's 503 `model_loading` on with the controller's Retry-After,
and /models' list of models still loading reaches `loading()` (the gateway's /ready)."""

from __future__ import annotations

import httpx
import pytest

from tokenyard.errors import ModelLoadingError, TokenyardError
from tokenyard.gateway.router import Router
from tokenyard.web import error_response


def _controller(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/dispatch":
        error = error_response(ModelLoadingError("小模型", "loading 小模型 onto cpu (3 s)"))
        return httpx.Response(error.status_code, content=error.body, headers=dict(error.headers))
    if request.url.path == "/models":
        return httpx.Response(200, json={"models": [], "loading": ["小模型"]})
    return httpx.Response(200, json={"routes": [], "complete": True})


async def test_model_loading_keeps_its_code_and_retry_after() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(_controller)) as client:
        router = Router(client, "http://controller", models_ttl=0)
        with pytest.raises(TokenyardError) as raised:
            await router.dispatch("小模型")
        assert raised.value.status_code == 503 and raised.value.code == "model_loading"
        assert raised.value.retry_after == ModelLoadingError.RETRY_AFTER
        assert not await router.ready()
        assert router.loading() == ["小模型"]
