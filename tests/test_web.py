"""The settings every tokenyard server runs with."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tokenyard.web import server_config


def test_servers_keep_idle_connections_longer_than_clients_pool_them() -> None:
    # Equal times race: a client reuses a pooled connection as the server closes it, and the
    # request fails (seen as a 503 "Could not reach worker" from the gateway).
    config = server_config(FastAPI(), "127.0.0.1", 8000)
    client_expiry = httpx.Limits().keepalive_expiry
    assert client_expiry is not None
    assert config.timeout_keep_alive > client_expiry
