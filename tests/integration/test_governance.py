"""Tenants, keys and access control end to end: real controller, workers and two gateways sharing one
store and the real Redis.

- /v1/models lists what each key may use and its tenant can reach; B's bound worker is never reached by A
  (a 404 at the gateway, and the worker itself refuses a misdirected request).
- Tenant B gets no cached prompt tokens from tenant A's identical prompt (the prefix cache is salted).
- A key revoked through one gateway is refused on the very next request on the other; one revoked in the
  store alone (no Redis message) within the one-second poll.
- A 10 rpm key gets 10 answers across both gateways, not 20.
- With its store gone, a gateway keeps serving keys it knew and says "degraded" on /ready.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from tests.integration.governed import GovernedGateway, migrate
from tests.integration.processes import Cluster, wait_until
from tokenyard.governance import keys
from tokenyard.governance.keys import KeySettings
from tokenyard.store import Store

REDIS_URL = os.environ.get("TOKENYARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_KEY = secrets.token_urlsafe(16)
LONG_PROMPT = " ".join(f"word{i}" for i in range(120))


@dataclass
class Governed:
    cluster: Cluster
    store: Store
    database_url: str
    gateways: list[GovernedGateway]
    b_worker_port: int


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(url: str, key: str, model: str = "tiny-chat", content: str = "你好", **fields: object) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 2, **fields}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=bearer(key), timeout=60)


def model_ids(url: str, key: str) -> list[str]:
    response = httpx.get(f"{url}/v1/models", headers=bearer(key), timeout=10)
    assert response.status_code == 200, response.text
    return sorted(m["id"] for m in response.json()["data"])


@pytest.fixture(scope="module")
def redis_prefix() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        pytest.skip(f"redis not reachable at {REDIS_URL}: {type(exc).__name__}")
    prefix = f"ty-test-{secrets.token_hex(6)}:"
    yield prefix
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


@pytest.fixture(scope="module")
def governed(
    tmp_path_factory: pytest.TempPathFactory, tiny_chat_model_dir: Path, redis_prefix: str
) -> Iterator[Governed]:
    cluster = Cluster(tmp_path_factory.mktemp("gov-logs"), tmp_path_factory.mktemp("gov-home"))
    database_url = f"sqlite:///{tmp_path_factory.mktemp('gov-store') / 'store.db'}"
    migrate(database_url)
    store = Store(database_url)
    shared = {
        "auth": {"enabled": True},
        "redis": {"url": REDIS_URL, "key_prefix": redis_prefix},
        "admin_key": ADMIN_KEY,
    }
    gateways: list[GovernedGateway] = []
    try:
        cluster.start_controller()
        cluster.start_worker("shared", str(tiny_chat_model_dir), "--model-name", "tiny-chat")
        b_worker = cluster.start_worker("b-own", str(tiny_chat_model_dir), "--model-name", "private-b", "--tenant", "b")
        gateways = [GovernedGateway(cluster, f"gateway-{n}", database_url, **shared).start() for n in (1, 2)]
        probe = keys.create_key(store, KeySettings(tenant="b")).key
        for gateway in gateways:
            assert wait_until(lambda g=gateway: len(model_ids(g.url, probe)) == 2, timeout=30), cluster.logs()
        yield Governed(cluster, store, database_url, gateways, b_worker.port)  # type: ignore[attr-defined]
    finally:
        for gateway in gateways:
            gateway.service.stop()
        cluster.stop()
        store.close()


def test_models_are_listed_per_key_and_tenant(governed: Governed) -> None:
    url = governed.gateways[0].url
    a = keys.create_key(governed.store, KeySettings(tenant="a")).key
    b = keys.create_key(governed.store, KeySettings(tenant="b")).key
    narrow = keys.create_key(governed.store, KeySettings(tenant="a", models=["something-else"])).key
    assert model_ids(url, a) == ["tiny-chat"]  # private-b is served only by B's own worker
    assert model_ids(url, b) == ["private-b", "tiny-chat"]
    assert model_ids(url, narrow) == []
    refused = chat(url, narrow, "tiny-chat")
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "model_not_found"


def test_bs_bound_worker_is_never_reached_by_a(governed: Governed) -> None:
    url = governed.gateways[0].url
    a = keys.create_key(governed.store, KeySettings(tenant="a")).key
    b = keys.create_key(governed.store, KeySettings(tenant="b")).key
    for _ in range(3):
        response = chat(url, a, "private-b")
        assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    assert chat(url, b, "private-b").status_code == 200
    # Even sent straight to it (the control plane answers loopback peers), B's worker refuses A.
    direct = {"request_id": "x", "model": "private-b", "prompt": "hi", "tenant": "a", "sampling": {"max_tokens": 1}}
    answer = httpx.post(f"http://127.0.0.1:{governed.b_worker_port}/generate", json=direct, timeout=30)
    assert answer.status_code == 404


def cached_tokens(url: str, key: str) -> int:
    response = chat(url, key, content=LONG_PROMPT, max_tokens=1, temperature=0)
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    assert usage["prompt_tokens"] > 100
    return int(usage["prompt_tokens_details"]["cached_tokens"])


def test_tenant_b_gets_no_cached_tokens_from_as_identical_prompt(governed: Governed) -> None:
    url = governed.gateways[0].url
    a1 = keys.create_key(governed.store, KeySettings(tenant="cache-a")).key
    a2 = keys.create_key(governed.store, KeySettings(tenant="cache-a")).key
    b = keys.create_key(governed.store, KeySettings(tenant="cache-b")).key
    cached_tokens(url, a1)  # fills the cache for tenant cache-a
    assert cached_tokens(url, b) == 0
    assert cached_tokens(url, a2) > 0  # within one tenant the prefix is shared


def test_a_revoked_key_is_refused_on_the_very_next_request_on_the_other_gateway(governed: Governed) -> None:
    first, second = (g.url for g in governed.gateways)
    created = keys.create_key(governed.store, KeySettings(tenant="r"))
    assert model_ids(second, created.key) == ["tiny-chat"]  # now cached by the second gateway
    revoked = httpx.delete(f"{first}/admin/keys/{created.prefix}", headers=bearer(ADMIN_KEY), timeout=10)
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    after = httpx.get(f"{second}/v1/models", headers=bearer(created.key), timeout=10)
    assert after.status_code == 401 and "revoked" in after.json()["error"]["message"]


def test_a_key_revoked_in_the_store_alone_is_refused_within_the_poll(governed: Governed) -> None:
    url = governed.gateways[1].url
    created = keys.create_key(governed.store, KeySettings(tenant="r"))
    assert model_ids(url, created.key) == ["tiny-chat"]
    keys.revoke_key(governed.store, created.prefix)  # as `tokenyard keys revoke` without Redis configured
    started = time.monotonic()

    def refused() -> bool:
        return httpx.get(f"{url}/v1/models", headers=bearer(created.key), timeout=10).status_code == 401

    assert wait_until(refused, timeout=5, interval=0.05)
    assert time.monotonic() - started < 2.0  # the poll runs every second


def test_keys_appear_in_no_log_and_no_command_line(governed: Governed) -> None:
    created = keys.create_key(governed.store, KeySettings(tenant="quiet", models=["tiny-chat"]))
    revoked = keys.create_key(governed.store, KeySettings(tenant="quiet"))
    keys.revoke_key(governed.store, revoked.prefix)
    for gateway in governed.gateways:
        assert chat(gateway.url, created.key).status_code == 200
        assert chat(gateway.url, created.key, "private-b").status_code == 404
        assert chat(gateway.url, revoked.key).status_code == 401
        assert chat(gateway.url, created.key[:-3] + "xyz").status_code == 401
    services = [*(g.service for g in governed.gateways), *governed.cluster.workers.values()]
    for service in services:
        assert service.process is not None
        command_line = Path(f"/proc/{service.process.pid}/cmdline").read_bytes().decode(errors="replace")
        log = service.log_path.read_text(errors="replace")  # the whole log, not only its tail
        for secret in (created.key[keys.PREFIX_LENGTH :], revoked.key[keys.PREFIX_LENGTH :], ADMIN_KEY):
            assert secret not in log and secret not in command_line


async def fire(urls: list[str], key: str, count: int) -> list[httpx.Response]:
    body = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    async with httpx.AsyncClient(timeout=60) as client:
        return await asyncio.gather(
            *(client.post(f"{urls[n % 2]}/v1/chat/completions", json=body, headers=bearer(key)) for n in range(count))
        )


def test_a_ten_rpm_key_gets_ten_answers_across_two_gateways_not_twenty(governed: Governed) -> None:
    key = keys.create_key(governed.store, KeySettings(tenant="rpm", rpm=10)).key
    responses = asyncio.run(fire([g.url for g in governed.gateways], key, 20))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 10 + [429] * 10, [r.text for r in responses if r.status_code not in (200, 429)]
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60


def test_a_gateway_without_its_store_serves_known_keys_and_says_degraded(governed: Governed, tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'own.db'}"
    migrate(database_url)
    store = Store(database_url)
    known = keys.create_key(store, KeySettings(tenant="o")).key
    stranger = keys.create_key(store, KeySettings(tenant="o")).key
    store.close()
    gateway = GovernedGateway(governed.cluster, "gateway-outage", database_url, auth={"enabled": True}).start()
    try:
        assert wait_until(lambda: model_ids(gateway.url, known) == ["tiny-chat"], timeout=30)
        (tmp_path / "own.db").write_bytes(b"this is no longer a database" * 512)  # the store is gone

        def degraded() -> bool:
            return httpx.get(f"{gateway.url}/ready", timeout=5).json().get("status") == "degraded"

        assert wait_until(degraded, timeout=10), gateway.service.logs()
        assert model_ids(gateway.url, known) == ["tiny-chat"]
        unknown = httpx.get(f"{gateway.url}/v1/models", headers=bearer(stranger), timeout=10)
        assert unknown.status_code == 503
        assert "auth degraded" in gateway.service.logs()
    finally:
        gateway.service.stop()


def prompt_tokens_served(worker_port: int) -> float:
    """Prompt tokens the worker has processed, from its own /metrics (0 when it has served nothing)."""
    text = httpx.get(f"http://127.0.0.1:{worker_port}/metrics", timeout=10).text
    lines = [line for line in text.splitlines() if line.startswith("tokenyard_prompt_tokens_total")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def test_a_saturated_tenant_gets_429_not_another_tenants_idle_worker(
    governed: Governed, tiny_chat_model_dir: Path
) -> None:
    """A's own worker (one running, one queued) is flooded while B's worker for the same model is idle:
    A's overflow is refused with 429 and B's worker never sees one of A's requests."""
    cluster = governed.cluster
    crowded = ["--model-name", "crowded", "--max-batch-size", "1"]
    env = {**cluster.env, "TOKENYARD_WORKER__MAX_QUEUE_LENGTH": "1"}
    own_a = cluster.start_worker("a-own", str(tiny_chat_model_dir), *crowded, "--tenant", "a", env=env)
    idle_b = cluster.start_worker("b-idle", str(tiny_chat_model_dir), *crowded, "--tenant", "b")
    url = governed.gateways[0].url
    a = keys.create_key(governed.store, KeySettings(tenant="a")).key
    assert wait_until(lambda: "crowded" in model_ids(url, a), timeout=30), cluster.logs()

    async def flood() -> list[httpx.Response]:
        body = {"model": "crowded", "messages": [{"role": "user", "content": "写一首诗"}], "max_tokens": 200}
        async with httpx.AsyncClient(timeout=120) as client:
            send = [client.post(f"{url}/v1/chat/completions", json=body, headers=bearer(a)) for _ in range(8)]
            return await asyncio.gather(*send)

    try:
        statuses = [r.status_code for r in asyncio.run(flood())]
        assert 200 in statuses and 429 in statuses, statuses
        assert set(statuses) <= {200, 429}, statuses
        assert prompt_tokens_served(own_a.port) > 0  # type: ignore[attr-defined]
        assert prompt_tokens_served(idle_b.port) == 0  # type: ignore[attr-defined]
    finally:
        own_a.stop()
        idle_b.stop()
