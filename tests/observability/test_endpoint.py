"""GET /metrics: Prometheus text, public by default, behind the admin key with metrics.require_auth."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import Counter

from tokenyard.config import load_settings
from tokenyard.errors import ConfigError
from tokenyard.observability.endpoint import ADMIN_KEY_ENV, install_metrics_endpoint, new_registry
from tokenyard.observability.settings import MetricsConfig


def _app(config: MetricsConfig) -> FastAPI:
    app = FastAPI()
    registry = new_registry()
    Counter("tokenyard_test_things", "Things.", registry=registry).inc(3)
    install_metrics_endpoint(app, registry, config, load_settings(None).admin_secret())
    return app


async def _get(app: FastAPI, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.get("/metrics", headers=headers)


async def test_metrics_are_public_by_default_with_process_series() -> None:
    response = await _get(_app(MetricsConfig()))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert "tokenyard_test_things_total 3.0" in response.text
    assert "process_resident_memory_bytes" in response.text  # the standard process collector


async def test_require_auth_wants_the_admin_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADMIN_KEY_ENV, "adm-秘密-key".encode().hex())
    app = _app(MetricsConfig(require_auth=True))
    refused = await _get(app)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert refused.json()["error"]["code"] == "invalid_api_key"
    wrong = await _get(app, {"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    ok = await _get(app, {"Authorization": f"Bearer {'adm-秘密-key'.encode().hex()}"})
    assert ok.status_code == 200 and "tokenyard_test_things_total" in ok.text


def test_require_auth_without_an_admin_key_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ADMIN_KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match="TOKENYARD_ADMIN_KEY"):
        _app(MetricsConfig(require_auth=True))


def test_two_apps_in_one_process_keep_their_own_series() -> None:
    first, second = new_registry(), new_registry()
    Counter("tokenyard_test_once", "Once.", registry=first)
    Counter("tokenyard_test_once", "Once.", registry=second)  # no "duplicated timeseries" error
    assert first.get_sample_value("tokenyard_test_once_total") == 0.0
