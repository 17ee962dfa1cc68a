"""A gateway with metering (and optionally logs, Redis) on, over its own config file, for integration tests."""

from __future__ import annotations

from typing import Any

import httpx
import yaml

from tests.integration.processes import Cluster, Service, free_port, wait_until
from tokenyard.store import Store


def migrate(url: str) -> None:
    store = Store(url)
    try:
        store.upgrade()
    finally:
        store.close()


class GovernedGateway:
    """One gateway process with a YAML config (metering on) in front of `cluster`'s controller."""

    def __init__(self, cluster: Cluster, name: str, database_url: str, **sections: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {"database": {"url": database_url}, "metering": {"enabled": True}, **sections}
        self.config_path = cluster.log_dir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config, allow_unicode=True))
        args = ["gateway", "--port", str(self.port), "--controller", cluster.controller_url]
        self.service = Service(name, [*args, "--config", str(self.config_path)], cluster.log_dir, cluster.env)

    def start(self) -> GovernedGateway:
        self.service.start()
        self.service.wait_http(f"{self.url}/health", timeout=60)
        return self

    def chat(self, content: str, **fields: Any) -> httpx.Response:
        body = {"model": fields.pop("model", "tiny-chat"), "messages": [{"role": "user", "content": content}]}
        headers = fields.pop("headers", {})
        return httpx.post(f"{self.url}/v1/chat/completions", json=body | fields, headers=headers, timeout=60)


def wait_for_models(gateway: GovernedGateway) -> None:
    def ready() -> bool:
        response = httpx.get(f"{gateway.url}/v1/models", timeout=5)
        return response.status_code == 200 and bool(response.json()["data"])

    assert wait_until(ready, timeout=30), gateway.service.logs()
