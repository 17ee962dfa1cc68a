"""The gateway's web pages: the chat page at `/` and the operations dashboard at `/dashboard`.

Both are hand-written HTML, CSS and JavaScript shipped inside the package (no CDN, no build step,
nothing fetched at run time). The pages are public; everything they show comes from JSON APIs that
check their own keys (`/v1/...` a tenant's key, `/admin/...` the admin key). Every page is served
with a strict Content-Security-Policy: scripts and styles only from this origin, no inline script,
so even a bug in the Markdown renderer could not run injected code.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC_PREFIX = "/ui"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def static_dir() -> Path:
    return Path(str(resources.files("tokenyard.webui") / "static"))


class _SecureStatic:
    """The static files, with the same security headers as the pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(k.lower().encode(), v.encode()) for k, v in PAGE_HEADERS.items()]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_webui(app: FastAPI) -> None:
    """Serve the chat page, the dashboard and their static files from `app`."""
    folder = static_dir()

    def page(name: str) -> Response:
        return FileResponse(folder / name, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    @app.get("/", include_in_schema=False)
    async def chat_page() -> Response:
        return page("chat.html")

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard_page() -> Response:
        """Public HTML; its data comes from /admin/..., which needs the admin key."""
        return page("dashboard.html")

    app.mount(STATIC_PREFIX, _SecureStatic(StaticFiles(directory=folder)), name="webui")
