"""Keys on /v1 and the admin key on /admin, through the gateway app, on every database kind.

No controller is running (its URL is a closed port), so whatever passes authentication ends in a
503 from the router; what these tests look at is what auth lets through and what it refuses.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.governance.test_keys import INJECTIONS, dump
from tokenyard.config import GatewayConfig, Settings
from tokenyard.gateway.app import create_app
from tokenyard.governance import keys
from tokenyard.governance.config import AuthConfig
from tokenyard.governance.keys import KeySettings
from tokenyard.store import Store

ADMIN_KEY = "admin-secret-for-tests"
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture
async def gateway(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        gateway=GatewayConfig(controller="http://127.0.0.1:9"),
        auth=AuthConfig(enabled=True),
        admin_key=ADMIN_KEY,  # type: ignore[arg-type]
    )
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code


async def test_every_v1_route_needs_a_valid_key(gateway: httpx.AsyncClient, store: Store) -> None:
    routes = [("GET", "/v1/models", None), ("POST", "/v1/chat/completions", {"model": "m", **CHAT})]
    routes += [("POST", "/v1/completions", {"model": "m", "prompt": "x"})]
    routes += [("POST", "/v1/embeddings", {"model": "m", "input": "x"}), ("GET", "/v1/nothing", None)]
    revoked = keys.create_key(store, KeySettings(tenant="t"))
    keys.revoke_key(store, revoked.prefix)
    for method, path, body in routes:
        for headers in (
            {},
            bearer("ty-unknown"),
            bearer("sk-" + "x" * 600),
            bearer(revoked.key),
            {"Authorization": "Basic x"},
        ):
            response = await gateway.request(method, path, json=body, headers=headers)
            assert_openai_error(response, 401, "invalid_api_key")
            assert response.headers["x-request-id"]


async def test_a_model_outside_the_key_does_not_exist(
    gateway: httpx.AsyncClient, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tokenyard.gateway.router")
    key = keys.create_key(store, KeySettings(tenant="a", models=["model-a"])).key
    for path, body in [
        ("/v1/chat/completions", {"model": "model-b", **CHAT}),
        ("/v1/completions", {"model": "model-b", "prompt": "x"}),
        ("/v1/embeddings", {"model": "model-b", "input": "x"}),
    ]:
        response = await gateway.post(path, json=body, headers=bearer(key))
        assert_openai_error(response, 404, "model_not_found")
        assert "model-b" in response.json()["error"]["message"]
    assert "last known routes" not in caplog.text  # refused before any dispatch
    allowed = await gateway.post("/v1/chat/completions", json={"model": "model-a", **CHAT}, headers=bearer(key))
    assert allowed.status_code != 401
    assert "last known routes" in caplog.text  # past auth, on to dispatch with no controller


async def test_keys_never_appear_in_logs_or_errors(
    gateway: httpx.AsyncClient, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good = keys.create_key(store, KeySettings(tenant="t", models=["m"])).key
    revoked = keys.create_key(store, KeySettings(tenant="t"))
    keys.revoke_key(store, revoked.prefix)
    bodies = []
    for key in (good, revoked.key, good[:-2] + "zz"):
        for model in ("m", "other"):
            response = await gateway.post("/v1/chat/completions", json={"model": model, **CHAT}, headers=bearer(key))
            bodies.append(response.text)
    for key in (good, revoked.key):
        secret = key[keys.PREFIX_LENGTH :]
        assert secret not in caplog.text
        assert all(secret not in body for body in bodies)


async def test_admin_api_needs_the_admin_key(gateway: httpx.AsyncClient) -> None:
    for headers in ({}, bearer("wrong"), bearer(ADMIN_KEY + "x"), {"Authorization": ADMIN_KEY}):
        assert_openai_error(await gateway.get("/admin/keys", headers=headers), 401)
        assert_openai_error(await gateway.post("/admin/keys", json={"tenant": "t"}, headers=headers), 401)


async def test_admin_api_manages_tenants_and_keys(gateway: httpx.AsyncClient) -> None:
    admin = bearer(ADMIN_KEY)
    made = await gateway.post("/admin/tenants", json={"name": "研发", "models": ["m"], "rpm": 3}, headers=admin)
    assert made.status_code == 201 and made.json()["rpm"] == 3
    assert (await gateway.post("/admin/tenants", json={"name": "研发"}, headers=admin)).status_code == 409
    patched = await gateway.patch("/admin/tenants/研发", json={"tpm": 50}, headers=admin)
    assert (patched.json()["rpm"], patched.json()["tpm"]) == (3, 50)
    created = (await gateway.post("/admin/keys", json={"tenant": "研发"}, headers=admin)).json()
    assert set(created) == {"key", "prefix", "tenant", "models"}
    ok = await gateway.post("/v1/chat/completions", json={"model": "m", **CHAT}, headers=bearer(created["key"]))
    assert ok.status_code not in (401, 403)
    listed = (await gateway.get("/admin/keys", params={"tenant": "研发"}, headers=admin)).json()["data"]
    assert [k["prefix"] for k in listed] == [created["prefix"]]
    assert created["key"] not in str(listed)
    revoked = await gateway.delete(f"/admin/keys/{created['prefix']}", headers=admin)
    assert revoked.json()["state"] == "revoked"
    refused = await gateway.post("/v1/chat/completions", json={"model": "m", **CHAT}, headers=bearer(created["key"]))
    assert_openai_error(refused, 401)
    assert_openai_error(await gateway.delete("/admin/keys/ty-none", headers=admin), 404)
    assert_openai_error(await gateway.post("/admin/tenants", json={"name": "x", "rpm": -1}, headers=admin), 400)


async def test_injection_strings_in_admin_filters_are_harmless(gateway: httpx.AsyncClient, store: Store) -> None:
    admin = bearer(ADMIN_KEY)
    keys.create_key(store, KeySettings(tenant="victim"))
    before = dump(store)
    for probe in INJECTIONS:
        assert (await gateway.get("/admin/keys", params={"tenant": probe}, headers=admin)).json()["data"] == []
        assert (await gateway.get("/admin/tenants", params={"name": probe}, headers=admin)).json()["data"] == []
        response = await gateway.delete(f"/admin/keys/{probe}", headers=admin)
        assert response.status_code in (400, 404)
    assert dump(store) == before


async def test_admin_api_closed_without_an_admin_key(store: Store) -> None:
    app = create_app(Settings(gateway=GatewayConfig(controller="http://127.0.0.1:9")), store=store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        response = await client.get("/admin/keys", headers=bearer(""))
    assert_openai_error(response, 403, "admin_disabled")
