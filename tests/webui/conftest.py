"""Browser fixtures: Debian's Chromium driven by Playwright, a real cluster, a folder for screenshots.

The browser is the system's `/usr/bin/chromium` (installed by scripts/test-deps.sh); Playwright's own
browser downloads are never used. Without Chromium the browser tests skip, saying so.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.governed import migrate
from tests.integration.processes import Cluster, wait_until

CHROMIUM = os.environ.get("TOKENYARD_CHROMIUM", "/usr/bin/chromium")
CHAT_MODEL = "tiny-chat"
EMBEDDING_MODEL = "tiny-embed"
ADMIN_KEY = "webui-admin-key-0123456789"

pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) is not installed")

from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Per module: Playwright's sync driver holds an event loop while it runs, which the async
    tests of later modules must not find running."""
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (scripts/test-deps.sh installs Debian's chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def artifacts(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $TOKENYARD_TEST_ARTIFACTS/webui, or a temporary folder; printed either way."""
    configured = os.environ.get("TOKENYARD_TEST_ARTIFACTS")
    folder = Path(configured) / "webui" if configured else tmp_path_factory.mktemp("webui-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"web UI screenshots: {folder}")
    return folder


@pytest.fixture(scope="session")
def web_cluster(
    tmp_path_factory: pytest.TempPathFactory, tiny_chat_model_dir: Path, tiny_embedding_model_dir: Path
) -> Iterator[Cluster]:
    """A controller, a tiny chat worker, a tiny embedding worker and a gateway serving the pages."""
    home = tmp_path_factory.mktemp("webui-home")
    running = Cluster(tmp_path_factory.mktemp("webui-logs"), home)
    # The admin API (the dashboard's data), metering (its usage table) and conversation logs (where
    # votes go) keep their state in a store.
    database = f"sqlite:///{home / 'webui.db'}"
    migrate(database)
    running.env.update(
        TOKENYARD_ADMIN_KEY=ADMIN_KEY,
        TOKENYARD_DATABASE__URL=database,
        TOKENYARD_METERING__ENABLED="true",
        TOKENYARD_LOGS__ENABLED="true",
    )
    try:
        running.start_controller()
        running.start_worker("chat", str(tiny_chat_model_dir), "--model-name", CHAT_MODEL)
        running.start_worker("embed", str(tiny_embedding_model_dir), "--model-name", EMBEDDING_MODEL)
        running.start_gateway()
        assert wait_until(lambda: len(running.model_ids()) == 2, timeout=15), running.logs()
        yield running
    finally:
        running.stop()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile per test: empty local storage, a desktop-sized window.

    `bypass_csp` lets Playwright evaluate its helpers in the page; it also proves the pages safe
    without their Content-Security-Policy (test_chat_safety checks the header separately).
    """
    ctx = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US", bypass_csp=True)
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A page that records uncaught script errors (`script_errors`) and console messages
    (`console`: CSP violations and failed loads show there) for tests to assert on."""
    tab = context.new_page()
    script_errors: list[str] = []
    console: list[str] = []
    tab.on("pageerror", lambda exc: script_errors.append(str(exc)))
    tab.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    tab.script_errors = script_errors  # type: ignore[attr-defined]
    tab.console = console  # type: ignore[attr-defined]
    yield tab
    tab.close()


@pytest.fixture
def browser_phone(browser: Browser) -> Iterator[Page]:
    """A phone-sized touch screen (390 x 844, as an iPhone 14)."""
    ctx = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True, bypass_csp=True
    )
    ctx.set_default_timeout(15_000)
    tab = ctx.new_page()
    yield tab
    ctx.close()
