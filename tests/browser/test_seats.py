"""Seats come free from the page: the Leave button gives the seat up (the opponent wins a
running game by forfeit and sees the seat open), and a quick match nobody answers offers
the computer instead. Debian chromium against a real replica (deploy.server)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.support.page import seat
from tests.support.server import UvicornServer

NewPage = Callable[..., Page]


@pytest.fixture
def server_env(tmp_path: Path) -> dict[str, str]:
    """This module's replicas give up a quick match after one second."""
    return {
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
        "QUICKMATCH_TIMEOUT_SECONDS": "1",
        "BOT_THINK_SECONDS": "0",
    }


def test_leave_gives_the_seat_up_and_the_opponent_wins_by_forfeit(
    server: UvicornServer, new_page: NewPage
) -> None:
    room = f"leave-{secrets.token_hex(3)}"
    ana, bo = new_page(), new_page()
    seat(ana, server, room, "ana", "X")
    seat(bo, server, room, "bo", "O")
    ana.get_by_test_id("cell-4").click()
    expect(bo.get_by_test_id("cell-4")).to_have_attribute("data-mark", "X")

    ana.locator("#leave").click()
    expect(ana.locator("body")).to_have_attribute("data-view", "lobby")
    expect(bo.get_by_test_id("player-X")).to_have_attribute("data-empty", "true")
    expect(
        bo.get_by_test_id("toast").filter(has_text="ana left: you win by forfeit.")
    ).to_be_visible()
    expect(bo.get_by_test_id("cell-4")).not_to_have_attribute("data-mark", "X")

    # Coming back, ana is a spectator: the seat token was given up with the seat.
    ana.goto(f"{server.url}/?room={room}")
    expect(ana.get_by_test_id("connection")).to_have_attribute("data-state", "open")
    expect(ana.get_by_test_id("my-mark")).to_have_text("Spectator")
    expect(ana.get_by_test_id("join")).to_be_enabled()


def test_a_quick_match_nobody_answers_offers_the_computer(
    server: UvicornServer, new_page: NewPage
) -> None:
    page = new_page()
    page.goto(server.url)
    page.get_by_test_id("name-input").fill("ana")
    page.get_by_test_id("quick-match").click()
    offer = page.get_by_test_id("quick-match-bot")
    expect(offer).to_be_visible(timeout=15_000)
    expect(page.get_by_test_id("quick-match-status")).to_contain_text("Nobody came")
    offer.click()
    expect(page.locator("body")).to_have_attribute("data-view", "room")
    expect(page.get_by_test_id("my-mark")).to_have_text("X")
    expect(page.get_by_test_id("player-O")).to_contain_text("Computer")
