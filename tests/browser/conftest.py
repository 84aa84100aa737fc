"""Fixtures for the browser tests: one real uvicorn server per test, Debian chromium.

The sync Playwright API runs in plain (non-async) tests and module-scoped
fixtures, so it never meets pytest-asyncio's event loop.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from devtools.processes import ROOT
from tests.support.server import UvicornServer

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
# Without the background-networking flags chromium hangs on an offline machine.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "var" / "screenshots"

expect.set_options(timeout=10_000)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.is_file() or not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install Debian's chromium package "
            "(apt-get install chromium) or point CHROMIUM_PATH at a chromium binary.",
            pytrace=False,
        )
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )
    yield browser
    browser.close()


@pytest.fixture
def server(server_env: dict[str, str], tmp_path: Path) -> Iterator[UvicornServer]:
    """A fresh replica (tests/conftest.py's `server_env`: its own SQLite database, unless
    a module says otherwise); restartable on the same port."""
    srv = UvicornServer(env=server_env, name="browser", log_dir=tmp_path)
    srv.migrate()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """Open pages in separate contexts (separate localStorage: separate people).

    Any uncaught JavaScript error on any page fails the test at teardown.
    """
    contexts: list[BrowserContext] = []
    errors: list[str] = []

    def open_page(**context_options: object) -> Page:
        options: dict[str, object] = {"viewport": {"width": 1280, "height": 860}}
        options.update(context_options)
        context = browser.new_context(**options)  # type: ignore[arg-type]
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
