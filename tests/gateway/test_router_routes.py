"""Router while the controller is away: the last route table keeps serving, minus failed workers.

The controller is an httpx MockTransport that can be taken down; no sleeping, no processes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from tokenyard.errors import ModelNotFoundError, NoHealthyWorkerError, TokenyardError
from tokenyard.gateway.router import Router
from tokenyard.protocol.internal import DispatchResponse, ModelKind, Route, RouteTable


def worker(name: str, tenants: list[str] | None = None) -> DispatchResponse:
    return DispatchResponse(
        worker_id=name, address=f"http://{name}", kind=ModelKind.GENERATE, context_length=64, tenants=tenants or []
    )


class Controller:
    """Answers /routes with `table`, /dispatch with the first worker; records reports; can go down."""

    def __init__(self, table: RouteTable) -> None:
        self.table, self.up = table, True
        self.reports: list[dict[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/routes":
            return httpx.Response(200, content=self.table.model_dump_json())
        if request.url.path == "/report_failure":
            self.reports.append(json.loads(request.content))
            return httpx.Response(200, json={"evicted": True})
        if request.url.path == "/dispatch":
            model = json.loads(request.content)["model"]
            if not any(r.model == model for r in self.table.routes):
                body = {
                    "error": {"message": "no such model", "type": "invalid_request_error", "code": "model_not_found"}
                }
                return httpx.Response(404, json=body)
            return httpx.Response(200, content=self.table.routes[0].workers[0].model_dump_json())
        return httpx.Response(404)


Routed = Callable[[RouteTable], Awaitable[tuple[Router, Controller]]]


@pytest.fixture
async def routed() -> AsyncIterator[Routed]:
    """Makes a router that has fetched `table` from its controller."""
    clients: list[httpx.AsyncClient] = []

    async def make(table: RouteTable) -> tuple[Router, Controller]:
        controller = Controller(table)
        clients.append(httpx.AsyncClient(transport=httpx.MockTransport(controller)))
        router = Router(clients[-1], "http://controller", models_ttl=0)
        await router.refresh_routes()
        return router, controller

    yield make
    for client in clients:
        await client.aclose()


async def test_an_unreachable_controller_leaves_the_last_routes_in_turn(routed: Routed) -> None:
    router, controller = await routed(RouteTable(routes=[Route(model="m", workers=[worker("w1"), worker("w2")])]))
    controller.up = False
    chosen = [(await router.dispatch("m")).worker_id for _ in range(4)]
    assert sorted(chosen) == ["w1", "w1", "w2", "w2"]
    assert {(await router.dispatch("m", exclude=["w1"])).worker_id for _ in range(3)} == {"w2"}


async def test_without_the_controller_only_a_tenants_own_or_shared_workers_serve_it(routed: Routed) -> None:
    table = RouteTable(routes=[Route(model="m", workers=[worker("private", ["acme"]), worker("shared")])])
    router, controller = await routed(table)
    controller.up = False
    assert {(await router.dispatch("m", exclude=["x"], tenant="other")).worker_id for _ in range(3)} == {"shared"}


async def test_without_the_controller_an_unknown_model_is_404_and_a_spent_one_503(routed: Routed) -> None:
    router, controller = await routed(RouteTable(routes=[Route(model="m", workers=[worker("w1")])]))
    controller.up = False
    with pytest.raises(ModelNotFoundError):
        await router.dispatch("other")
    with pytest.raises(NoHealthyWorkerError):
        await router.dispatch("m", exclude=["w1"])


async def test_a_reported_worker_is_told_to_the_controller_and_left_out_of_the_routes(routed: Routed) -> None:
    router, controller = await routed(RouteTable(routes=[Route(model="m", workers=[worker("w1"), worker("w2")])]))
    router.report_failure("w1", "connection refused")
    await asyncio.sleep(0.01)  # the report is sent in the background
    assert controller.reports == [{"worker_id": "w1", "error": "connection refused"}]
    controller.up = False
    assert {(await router.dispatch("m")).worker_id for _ in range(3)} == {"w2"}


async def test_the_controllers_errors_are_passed_on_typed(routed: Routed) -> None:
    router, _ = await routed(RouteTable(routes=[Route(model="m", workers=[worker("w1"), worker("w2")])]))
    with pytest.raises(TokenyardError) as caught:
        await router.dispatch("other", exclude=["w9"])
    assert caught.value.status_code == 404 and caught.value.code == "model_not_found"


async def test_an_incomplete_table_from_a_restarted_controller_keeps_the_routes_it_lacks(routed: Routed) -> None:
    router, controller = await routed(
        RouteTable(routes=[Route(model="m", workers=[worker("w1")]), Route(model="n", workers=[worker("w3")])])
    )
    controller.table = RouteTable(routes=[Route(model="m", workers=[worker("w2")])], complete=False)
    await router.refresh_routes()
    controller.up = False
    assert (await router.dispatch("n", exclude=["x"])).worker_id == "w3"
    assert (await router.dispatch("m", exclude=["x"])).worker_id == "w2"
    assert router.serves("n") and not router.serves("o")
