"""`tokenyard gateway`: serve the OpenAI-compatible API until a signal stops it."""

from __future__ import annotations

from tokenyard.config import Settings
from tokenyard.gateway.app import create_app
from tokenyard.store import Store
from tokenyard.web import serve_app


def open_store(settings: Settings) -> Store | None:
    """The governance database, checked to be at this code's schema; None while nothing needs one.

    Raises StoreError (the message says to run `tokenyard db upgrade`) on an older schema, so a
    gateway never serves with tables its code does not expect.
    """
    if not (settings.auth.enabled or settings.admin_key or settings.metering_on()):
        return None
    store = Store(settings.database_url(), settings.database.pool_size)
    try:
        store.require_current_schema()
    except Exception:
        store.close()
        raise
    return store


def run_gateway(settings: Settings) -> None:
    store = open_store(settings)
    app = create_app(settings, store=store)
    # On SIGTERM uvicorn stops listening at once (a proxy in front moves new requests to another
    # gateway) and lets the requests in flight, streams included, finish within the drain timeout.
    try:
        serve_app(app, settings.gateway.host, settings.gateway.port, graceful_timeout=settings.gateway.drain_timeout)
    finally:
        if store is not None:
            store.close()
