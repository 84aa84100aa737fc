"""A move committed whose broadcast never left (a worker killed between saving the
computer's move and publishing it) shows on the page within 2 s, without a reload: the
replica's catch-up re-sends the room (ROOM_CATCH_UP_SECONDS). Debian chromium against a
real replica; the lost broadcast is made exactly by another process that commits a move
through the ORM services (which never broadcast) and exits."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from playwright.sync_api import Page, expect

from tests.support.page import seat
from tests.support.server import UvicornServer, move_unannounced
from tests.support.timing import budget

NewPage = Callable[..., Page]
SHOWN_WITHIN_MS = budget(2.0) * 1000  # the promise: no room without its move for over 2 s


def test_a_move_whose_broadcast_was_lost_shows_without_a_reload(
    server: UvicornServer, new_page: NewPage
) -> None:
    room = f"lost-{secrets.token_hex(3)}"
    ana, bo = new_page(), new_page()
    seat(ana, server, room, "ana", "X")
    seat(bo, server, room, "bo", "O")
    expect(bo.get_by_test_id("status")).to_have_text("ana's turn")

    move_unannounced(server, room, "X", 4)
    for page in (ana, bo):
        expect(page.get_by_test_id("cell-4")).to_have_attribute(
            "data-mark", "X", timeout=SHOWN_WITHIN_MS
        )
    expect(bo.get_by_test_id("status")).to_have_text("Your turn")
