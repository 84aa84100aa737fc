"""The page under its Content-Security-Policy: chromium enforces it, nothing is refused,
and the game works (a seat, a move, a chat line, the computer opponent)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

from playwright.sync_api import ConsoleMessage, Page, expect

from tests.support.server import UvicornServer

NewPage = Callable[..., Page]


def test_the_page_plays_under_its_policy_with_nothing_refused(
    server: UvicornServer, new_page: NewPage
) -> None:
    page = new_page()
    refused: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            refused.append(message.text)

    page.on("console", on_console)
    response = page.goto(f"{server.url}/")
    assert response is not None
    assert "script-src 'self'" in response.headers["content-security-policy"]
    room = f"csp-{secrets.token_hex(3)}"
    page.get_by_test_id("room-input").fill(room)
    page.get_by_test_id("name-input").fill("ana")
    page.get_by_test_id("enter-room").click()
    expect(page).to_have_url(re.compile(rf"\?room={room}$"))
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "open")
    page.get_by_test_id("join").click()
    expect(page.get_by_test_id("my-mark")).to_have_text("X")
    page.get_by_test_id("bot").click()
    page.get_by_test_id("cell-4").click()
    expect(page.get_by_test_id("cell-4")).to_have_attribute("data-mark", "X")
    page.get_by_test_id("chat-input").fill("gg")
    page.get_by_test_id("chat-input").press("Enter")
    expect(page.get_by_test_id("chat-log").locator("li").last).to_contain_text("gg")
    assert refused == []
