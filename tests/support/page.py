"""Steps the browser suites share (Playwright pages against a real replica)."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.support.server import UvicornServer


def seat(page: Page, server: UvicornServer, room: str, name: str, mark: str) -> None:
    """Open the room's page, take a seat under `name`, and wait until it shows `mark`."""
    page.goto(f"{server.url}/?room={room}")
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "open")
    page.get_by_test_id("name-input").fill(name)
    page.get_by_test_id("join").click()
    expect(page.get_by_test_id("my-mark")).to_have_text(mark)
