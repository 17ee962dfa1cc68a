"""Router: when a fresh route table leaves one worker, no controller round trip; otherwise the controller picks.

A unit test of one module: the controller is an httpx MockTransport that counts /dispatch calls.
"""

from __future__ import annotations

import httpx
import pytest

from tokenyard.gateway import router as router_module
from tokenyard.gateway.router import Router
from tokenyard.protocol.internal import DispatchResponse, ModelKind, Route, RouteTable


def _worker(name: str, tenants: list[str] | None = None) -> DispatchResponse:
    return DispatchResponse(
        worker_id=name, address=f"http://{name}", kind=ModelKind.EMBED, context_length=512, tenants=tenants or []
    )


def _controller(table: RouteTable, calls: list[str]) -> httpx.AsyncClient:
    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/routes":
            return httpx.Response(200, content=table.model_dump_json())
        chosen = next(w for r in table.routes for w in r.workers if w.worker_id == "w2" or len(r.workers) == 1)
        return httpx.Response(200, content=chosen.model_dump_json())

    return httpx.AsyncClient(transport=httpx.MockTransport(handle), base_url="http://controller")


async def test_one_worker_in_a_fresh_table_needs_no_dispatch_call() -> None:
    calls: list[str] = []
    table = RouteTable(routes=[Route(model="minilm", workers=[_worker("w1")])])
    async with _controller(table, calls) as client:
        router = Router(client, "http://controller", models_ttl=0.5)
        assert (await router.dispatch("minilm")).worker_id == "w1"  # no table yet: the controller decides
        assert calls == ["/dispatch"]
        await router.refresh_routes()
        for _ in range(5):
            assert (await router.dispatch("minilm")).worker_id == "w1"
        assert calls == ["/dispatch", "/routes"]
        await router.dispatch("minilm", exclude=["w1"])  # a retry always asks the controller
        assert calls[-1] == "/dispatch"


async def test_several_workers_another_tenant_or_a_stale_table_go_to_the_controller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    table = RouteTable(
        routes=[
            Route(model="chat", workers=[_worker("w1"), _worker("w2")]),
            Route(model="private", workers=[_worker("w3", tenants=["acme"])]),
        ]
    )
    async with _controller(table, calls) as client:
        router = Router(client, "http://controller", models_ttl=0.5)
        await router.refresh_routes()
        assert (await router.dispatch("chat")).worker_id == "w2"  # the controller's choice among two
        assert calls == ["/routes", "/dispatch"]
        assert (await router.dispatch("private", tenant="acme")).worker_id == "w3"  # its own: no call
        assert calls == ["/routes", "/dispatch"]
        await router.dispatch("private", tenant="other")  # not its worker: the controller answers (404 there)
        assert calls == ["/routes", "/dispatch", "/dispatch"]
        monkeypatch.setattr(router_module, "SOLE_ROUTE_MAX_AGE", -1.0)  # the table is now too old
        await router.dispatch("private", tenant="acme")
        assert calls[-1] == "/dispatch" and len(calls) == 4
