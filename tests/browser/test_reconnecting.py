"""While the page is cut off from the server it says so: the headline reads
"Reconnecting…" (never "Your turn" on a board that may be stale) and nobody's presence is
shown as known; once back, both are current again."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

from playwright.sync_api import Page, expect

from tests.support.page import seat
from tests.support.server import UvicornServer

NewPage = Callable[..., Page]
RECONNECT_TIMEOUT_MS = 20_000


def test_a_cut_off_page_says_it_is_reconnecting_and_greys_presence(
    server: UvicornServer, new_page: NewPage
) -> None:
    room = f"cut-{secrets.token_hex(3)}"
    ana, bo = new_page(), new_page()
    seat(ana, server, room, "ana", "X")
    seat(bo, server, room, "bo", "O")
    expect(ana.get_by_test_id("status")).to_have_text("Your turn")
    expect(ana.get_by_test_id("player-O")).to_have_attribute("data-online", "true")

    server.kill()
    expect(ana.get_by_test_id("connection")).to_have_attribute("data-state", "connecting")
    expect(ana.get_by_test_id("status")).to_have_text("Reconnecting…")
    for mark in ("X", "O"):
        card = ana.get_by_test_id(f"player-{mark}")
        expect(card).to_have_attribute("data-online", "unknown")
        expect(card).to_contain_text(re.compile("Unknown while reconnecting"))

    server.start()
    expect(ana.get_by_test_id("connection")).to_have_attribute(
        "data-state", "open", timeout=RECONNECT_TIMEOUT_MS
    )
    expect(ana.get_by_test_id("status")).to_have_text("Your turn", timeout=RECONNECT_TIMEOUT_MS)
    expect(ana.get_by_test_id("player-O")).to_have_attribute(
        "data-online", "true", timeout=RECONNECT_TIMEOUT_MS
    )
