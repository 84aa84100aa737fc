"""The bundled page, driven in real chromium against a real uvicorn replica.

The tests play through the page the way people would (clicks, typing, several
browser contexts as several people) and assert on the `data-testid` hooks the
page exposes. One test scripts the WebSocket frame by frame instead, for the
parts of the protocol a healthy server rarely shows (out-of-order versions,
1012 closes).
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, WebSocketRoute, expect

from tests.support.server import UvicornServer

pytestmark = pytest.mark.browser

RECONNECT_TIMEOUT_MS = 20_000
NewPage = Callable[..., Page]


def room_code(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def enter_from_lobby(page: Page, server: UvicornServer, room: str, name: str) -> None:
    page.goto(f"{server.url}/")
    page.get_by_test_id("room-input").fill(room)
    page.get_by_test_id("name-input").fill(name)
    page.get_by_test_id("enter-room").click()
    expect(page).to_have_url(re.compile(rf"\?room={room}$"))
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "open")


def enter_by_link(page: Page, server: UvicornServer, room: str, name: str | None = None) -> None:
    page.goto(f"{server.url}/?room={room}")
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "open")
    if name is not None:
        page.get_by_test_id("name-input").fill(name)


def take_seat(page: Page, mark: str) -> None:
    page.get_by_test_id("join").click()
    expect(page.get_by_test_id("my-mark")).to_have_text(mark)
    expect(page.get_by_test_id(f"player-{mark}")).to_have_attribute("data-online", "true")


def seat_two_players(new_page: NewPage, server: UvicornServer, room: str) -> tuple[Page, Page]:
    """ana holds X (came through the lobby), bo holds O (opened the shared link)."""
    ana = new_page()
    enter_from_lobby(ana, server, room, "ana")
    take_seat(ana, "X")
    bo = new_page()
    enter_by_link(bo, server, room, "bo")
    take_seat(bo, "O")
    for page in (ana, bo):
        expect(page.get_by_test_id("player-X")).to_contain_text("ana")
        expect(page.get_by_test_id("player-O")).to_contain_text("bo")
    return ana, bo


def play(mover: Page, cell: int, mark: str, *watchers: Page) -> None:
    """Click a cell (auto-waits until it is playable) and wait until everyone sees it."""
    mover.get_by_test_id(f"cell-{cell}").click()
    for page in (mover, *watchers):
        expect(page.get_by_test_id(f"cell-{cell}")).to_have_attribute("data-mark", mark)


def play_top_row_win(ana: Page, bo: Page) -> None:
    """ana (X) takes the top row while bo (O) plays 3 and 4; both see every move."""
    for cell, mark in ((0, "X"), (3, "O"), (1, "X"), (4, "O"), (2, "X")):
        mover, other = (ana, bo) if mark == "X" else (bo, ana)
        play(mover, cell, mark, other)
    expect(bo.get_by_test_id("status")).to_have_text("ana wins")


def expect_board(page: Page, board: str) -> None:
    """`board` is nine characters, X / O / '.' for empty."""
    for i, mark in enumerate(board):
        expected = "" if mark == "." else mark
        expect(page.get_by_test_id(f"cell-{i}")).to_have_attribute("data-mark", expected)


def test_two_players_play_to_a_win_that_players_and_spectator_see(
    server: UvicornServer, new_page: NewPage, screenshot_dir: Path
) -> None:
    room = room_code("win")
    ana = new_page()
    enter_from_lobby(ana, server, room, "ana")
    expect(ana.get_by_test_id("my-mark")).to_have_text("Spectator")
    expect(ana.get_by_test_id("status")).to_have_text("Waiting for players")
    expect(ana.get_by_test_id("server")).to_have_text("browser")
    take_seat(ana, "X")
    expect(ana.get_by_test_id("status")).to_have_text("Waiting for an opponent")
    expect(ana.get_by_test_id("bot")).to_be_visible()
    expect(ana.get_by_test_id("player-O")).to_have_attribute("data-online", "false")

    bo = new_page()
    enter_by_link(bo, server, room, "bo")
    take_seat(bo, "O")
    expect(ana.get_by_test_id("bot")).to_be_hidden()

    watcher = new_page()
    enter_by_link(watcher, server, room)
    for page in (ana, bo, watcher):
        expect(page.get_by_test_id("spectators")).to_have_text("1")
    expect(watcher.get_by_test_id("join")).to_be_hidden()
    expect(watcher.locator("#watch-note")).to_be_visible()

    expect(ana.get_by_test_id("status")).to_have_text("Your turn")
    expect(bo.get_by_test_id("status")).to_have_text("ana's turn")
    play(ana, 0, "X", bo, watcher)
    expect(bo.get_by_test_id("status")).to_have_text("Your turn")
    play(bo, 3, "O", ana, watcher)
    play(ana, 1, "X", bo, watcher)
    play(bo, 4, "O", ana, watcher)
    play(ana, 2, "X", bo, watcher)

    for page in (ana, bo, watcher):
        expect(page.get_by_test_id("status")).to_have_text("ana wins")
        expect_board(page, "XXXOO....")
        winning = page.locator('[data-testid^="cell-"][data-win="true"]')
        expect(winning).to_have_count(3)
        for cell in (0, 1, 2):
            expect(page.get_by_test_id(f"cell-{cell}")).to_have_attribute("data-win", "true")
        expect(page.locator('[data-testid^="cell-"]:enabled')).to_have_count(0)
        expect(page.get_by_test_id("version")).to_have_text("v7")  # 2 seats + 5 moves
    expect(watcher.get_by_test_id("my-mark")).to_have_text("Spectator")
    expect(watcher.get_by_test_id("rematch")).to_be_hidden()
    expect(ana.get_by_test_id("rematch")).to_be_visible()

    ana.wait_for_timeout(600)  # let the strike-through animation finish
    ana.screenshot(path=str(screenshot_dir / "game-won-desktop.png"))
    phone = new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    enter_by_link(phone, server, room)
    expect(phone.get_by_test_id("status")).to_have_text("ana wins")
    phone.wait_for_timeout(600)
    phone.screenshot(path=str(screenshot_dir / "game-won-phone.png"), full_page=True)


def test_pages_reconnect_after_server_restart_and_reclaim_their_seats(
    server: UvicornServer, new_page: NewPage, screenshot_dir: Path
) -> None:
    room = room_code("restart")
    ana, bo = seat_two_players(new_page, server, room)
    play(ana, 4, "X", bo)

    server.kill()
    for page in (ana, bo):
        connection = page.get_by_test_id("connection")
        expect(connection).to_have_attribute("data-state", "connecting")
        expect(connection).to_contain_text("Reconnecting")
        expect(page.get_by_test_id("cell-4")).to_have_attribute("data-mark", "X")
    ana.wait_for_timeout(500)  # let the draw-on animation of the X finish
    ana.screenshot(path=str(screenshot_dir / "reconnecting.png"))

    server.start()
    for page, mark in ((ana, "X"), (bo, "O")):
        expect(page.get_by_test_id("connection")).to_have_attribute(
            "data-state", "open", timeout=RECONNECT_TIMEOUT_MS
        )
        expect(page.get_by_test_id("my-mark")).to_have_text(mark)
        expect(page.get_by_test_id("my-mark")).to_have_attribute("data-seat", "seated")
        expect(page.get_by_test_id("player-X")).to_have_attribute("data-online", "true")
        expect(page.get_by_test_id("player-O")).to_have_attribute("data-online", "true")
        expect_board(page, "....X....")
    expect(bo.get_by_test_id("status")).to_have_text("Your turn")

    play(bo, 0, "O", ana)
    play(ana, 1, "X", bo)
    play(bo, 2, "O", ana)
    play(ana, 7, "X", bo)
    for page in (ana, bo):
        expect(page.get_by_test_id("status")).to_have_text("ana wins")
        expect_board(page, "OXO.X..X.")


def test_rematch_starts_a_new_game_and_chat_reaches_the_other_page(
    server: UvicornServer, new_page: NewPage
) -> None:
    room = room_code("rematch")
    ana, bo = seat_two_players(new_page, server, room)

    ana.get_by_test_id("chat-input").fill("good luck!")
    ana.get_by_test_id("chat-send").click()
    for page in (ana, bo):
        line = page.get_by_test_id("chat-log").locator("li").last
        expect(line).to_contain_text("ana")
        expect(line).to_contain_text("good luck!")
        expect(line).to_have_attribute("data-mark", "X")
    expect(ana.get_by_test_id("chat-input")).to_have_value("")

    play_top_row_win(ana, bo)

    bo.get_by_test_id("chat-input").fill("gg, again?")
    bo.get_by_test_id("chat-input").press("Enter")
    line = ana.get_by_test_id("chat-log").locator("li").last
    expect(line).to_contain_text("bo")
    expect(line).to_contain_text("gg, again?")
    expect(line).to_have_attribute("data-mark", "O")

    ana.get_by_test_id("rematch").click()
    expect(ana.get_by_test_id("rematch")).to_be_disabled()
    expect(bo.get_by_test_id("rematch-note")).to_have_text("ana (X) wants a rematch")
    expect(bo.get_by_test_id("rematch")).to_have_text("Accept rematch")
    bo.get_by_test_id("rematch").click()

    for page in (ana, bo):
        expect_board(page, ".........")
        expect(page.get_by_test_id("rematch")).to_be_hidden()
        expect(page.get_by_test_id("version")).to_have_text("v8")
    # The other mark opens the new game.
    expect(bo.get_by_test_id("status")).to_have_text("Your turn")
    expect(ana.get_by_test_id("status")).to_have_text("bo's turn")
    play(bo, 8, "O", ana)
    expect(ana.get_by_test_id("status")).to_have_text("Your turn")


def test_lobby_validates_the_room_code_and_remembers_the_name(
    server: UvicornServer, new_page: NewPage
) -> None:
    page = new_page(permissions=["clipboard-read", "clipboard-write"])
    page.goto(f"{server.url}/")
    room_input = page.get_by_test_id("room-input")
    room_input.fill("no spaces!")
    page.get_by_test_id("name-input").fill("cy")
    page.get_by_test_id("enter-room").click()
    expect(page.locator("#room-hint")).to_contain_text("letters, digits, _ or -")
    expect(page).to_have_url(f"{server.url}/")

    page.locator("#random-room").click()
    code = room_input.input_value()
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,32}", code), code
    page.get_by_test_id("enter-room").click()
    expect(page).to_have_url(f"{server.url}/?room={code}")
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "open")
    expect(page.get_by_test_id("room-code")).to_have_text(code)
    page.get_by_test_id("copy-link").click()
    expect(page.get_by_test_id("toast").last).to_contain_text("Link copied")
    assert page.evaluate("navigator.clipboard.readText()") == f"{server.url}/?room={code}"

    # A bad move is impossible from the page; a bad name is refused before sending.
    page.get_by_test_id("name-input").fill("")
    page.get_by_test_id("join").click()
    expect(page.locator("#name-hint")).to_have_text(
        re.compile(r"^Enter a name .* to take a seat\.$")
    )
    expect(page.get_by_test_id("my-mark")).to_have_text("Spectator")
    page.get_by_test_id("name-input").fill("computer")  # the computer opponent's name
    page.get_by_test_id("join").click()
    expect(page.locator("#name-hint")).to_have_text("Computer is the computer opponent's name.")
    expect(page.get_by_test_id("my-mark")).to_have_text("Spectator")
    page.get_by_test_id("name-input").fill("cy")
    take_seat(page, "X")

    # The name and the seat survive a reload: the stored token reclaims X.
    page.reload()
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "open")
    expect(page.get_by_test_id("my-mark")).to_have_attribute("data-seat", "seated")
    expect(page.get_by_test_id("my-mark")).to_have_text("X")
    expect(page.get_by_test_id("name-input")).to_have_value("cy")

    # Back in the lobby, an invalid room link is refused with a message.
    page.goto(f"{server.url}/?room=bad%20room")
    expect(page.get_by_test_id("enter-room")).to_be_visible()
    expect(page.locator("#room-hint")).to_contain_text("letters, digits, _ or -")


def test_play_vs_computer_fills_the_empty_seat_and_the_computer_answers(
    server: UvicornServer, new_page: NewPage
) -> None:
    page = new_page()
    enter_from_lobby(page, server, room_code("bot"), "ana")
    take_seat(page, "X")
    page.get_by_test_id("bot").click()
    opponent = page.get_by_test_id("player-O")
    expect(opponent).to_have_attribute("data-empty", "false")
    expect(opponent.locator(".player-bot")).to_be_visible()
    expect(page.get_by_test_id("bot")).to_be_hidden()
    expect(page.get_by_test_id("status")).to_have_text("Your turn")

    play(page, 4, "X")
    expect(page.locator('[data-testid^="cell-"][data-mark="O"]')).to_have_count(1)
    expect(page.get_by_test_id("status")).to_have_text("Your turn")


def test_a_stale_seat_token_is_forgotten_with_an_error_toast(
    server: UvicornServer, new_page: NewPage
) -> None:
    room = room_code("token")
    page = new_page()
    page.goto(f"{server.url}/")
    page.evaluate(
        "([room]) => { localStorage.setItem(`tictac:token:${room}`, 'not-a-real-token');"
        " localStorage.setItem(`tictac:mark:${room}`, 'X');"
        " localStorage.setItem('tictac:name', 'ana'); }",
        [room],
    )
    page.goto(f"{server.url}/?room={room}")
    toast = page.locator('[data-testid="toast"][data-code="bad_token"]')
    expect(toast).to_be_visible()
    expect(page.get_by_test_id("my-mark")).to_have_text("Spectator")
    assert page.evaluate(f"localStorage.getItem('tictac:token:{room}')") is None
    expect(toast).to_be_hidden(timeout=8_000)  # toasts are transient

    expect(page.get_by_test_id("name-input")).to_have_value("ana")
    take_seat(page, "X")


def scripted_state(room: str, version: int, board: str, **overrides: Any) -> str:
    state = {
        "type": "state",
        "room": room,
        "version": version,
        "board": [None if c == "." else c for c in board],
        "turn": "X",
        "status": "playing",
        "winner": None,
        "line": None,
        "players": {"X": {"name": "ana", "online": True}, "O": {"name": "bo", "online": True}},
        "spectators": 0,
        "rematch": [],
    }
    state.update(overrides)
    return json.dumps(state)


def wait_until(page: Page, condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Poll a Python-side condition while Playwright keeps dispatching events."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.wait_for_timeout(50)


def test_page_follows_the_protocol_against_a_scripted_socket(
    server: UvicornServer, new_page: NewPage
) -> None:
    """The page's side of the protocol, with the socket scripted frame by frame:
    out-of-order versions, the tie rule, the exact frames it sends, error toasts,
    and a 1012 close followed by a reconnect that reclaims the seat by token."""
    room = room_code("script")
    sockets: list[WebSocketRoute] = []
    sent: list[dict[str, Any]] = []

    def on_socket(ws: WebSocketRoute) -> None:
        sockets.append(ws)
        ws.on_message(lambda message: sent.append(json.loads(message)))
        welcome = {"type": "welcome", "room": room, "server": f"web-{len(sockets)}", "protocol": 1}
        ws.send(json.dumps(welcome))

    def frames(kind: str) -> list[dict[str, Any]]:
        return [frame for frame in sent if frame.get("type") == kind]

    page = new_page()
    page.route_web_socket(re.compile(r"/ws/game/"), on_socket)
    enter_from_lobby(page, server, room, "ana")
    expect(page.get_by_test_id("server")).to_have_text("web-1")

    # Latency from ping/pong.
    wait_until(page, lambda: bool(frames("ping")), "a ping")
    sockets[0].send(json.dumps({"type": "pong", "t": frames("ping")[0]["t"]}))
    expect(page.get_by_test_id("latency")).to_have_text(re.compile(r"^\d+ ms$"))

    # Highest version wins; an older state is ignored; on a tie the later one wins.
    sockets[0].send(scripted_state(room, 5, "X........", turn="O", spectators=2))
    expect(page.get_by_test_id("version")).to_have_text("v5")
    sockets[0].send(scripted_state(room, 3, "........."))
    sockets[0].send(json.dumps({"type": "chat", "mark": "O", "name": "bo", "text": "marker"}))
    expect(page.get_by_test_id("chat-log")).to_contain_text("marker")  # v3 was processed
    expect(page.get_by_test_id("cell-0")).to_have_attribute("data-mark", "X")
    expect(page.get_by_test_id("version")).to_have_text("v5")
    sockets[0].send(scripted_state(room, 5, "X...O....", spectators=2))
    expect(page.get_by_test_id("cell-4")).to_have_attribute("data-mark", "O")
    expect(page.get_by_test_id("spectators")).to_have_text("2")

    # Taking a seat sends join with the name only; joined stores the token.
    sockets[0].send(
        scripted_state(
            room, 6, ".........", status="waiting", turn=None, players={"X": None, "O": None}
        )
    )
    page.get_by_test_id("join").click()
    wait_until(page, lambda: bool(frames("join")), "a join frame")
    assert frames("join") == [{"type": "join", "name": "ana"}]
    sockets[0].send(json.dumps({"type": "joined", "mark": "X", "token": "tok-1"}))
    expect(page.get_by_test_id("my-mark")).to_have_text("X")
    assert page.evaluate(f"localStorage.getItem('tictac:token:{room}')") == "tok-1"

    # A move carries the current version; an error frame becomes a toast.
    sockets[0].send(
        scripted_state(
            room,
            8,
            "....O....",
            players={"X": {"name": "ana", "online": True}, "O": {"name": "bo", "online": True}},
        )
    )
    page.get_by_test_id("cell-2").click()
    wait_until(page, lambda: bool(frames("move")), "a move frame")
    assert frames("move") == [{"type": "move", "cell": 2, "version": 8}]
    sockets[0].send(
        json.dumps(
            {"type": "error", "code": "cell_taken", "message": "That cell is already taken."}
        )
    )
    expect(page.locator('[data-testid="toast"][data-code="cell_taken"]')).to_have_text(
        "That cell is already taken."
    )

    # 1012 (draining): reconnect by itself and reclaim the seat with the token.
    sockets[0].close(code=1012, reason="draining")
    expect(page.get_by_test_id("connection")).to_have_attribute(
        "data-state", "open", timeout=RECONNECT_TIMEOUT_MS
    )
    expect(page.get_by_test_id("server")).to_have_text("web-2")
    wait_until(page, lambda: len(frames("join")) == 2, "the reclaiming join")
    assert frames("join")[1] == {"type": "join", "name": "ana", "token": "tok-1"}
    # Versions keep growing across connections: an older snapshot is still ignored.
    sockets[1].send(scripted_state(room, 2, "......X.."))
    sockets[1].send(scripted_state(room, 9, "..X.O...."))
    expect(page.get_by_test_id("version")).to_have_text("v9")
    expect(page.get_by_test_id("cell-2")).to_have_attribute("data-mark", "X")
    expect(page.get_by_test_id("cell-6")).to_have_attribute("data-mark", "")


def test_quick_match_pairs_two_pages_and_the_leaderboard_shows_their_finished_game(
    server: UvicornServer, new_page: NewPage, screenshot_dir: Path
) -> None:
    """Two people press Quick match in the lobby and land in the same room, X and O,
    seated by the token from `matched`; after their game the leaderboard panel (in the
    room, and in the lobby on load) lists both with the result."""
    ana, bo = new_page(), new_page()
    for page, name in ((ana, "ana"), (bo, "bo")):
        page.goto(f"{server.url}/")
        expect(page.get_by_test_id("leaderboard")).to_have_attribute("data-state", "empty")
        page.get_by_test_id("name-input").fill(name)

    ana.get_by_test_id("quick-match").click()
    status = ana.get_by_test_id("quick-match-status")
    expect(status).to_have_text("Looking for an opponent…")
    expect(ana.get_by_test_id("quick-match")).to_have_text("Cancel")
    # ana is in line (has a ticket) before bo asks: ana is first, so ana plays X.
    expect(status).to_have_attribute("data-ticket", re.compile(r"^\d+$"))
    bo.get_by_test_id("quick-match").click()

    room_re = re.compile(r"\?room=(qm-[0-9a-f]+)$")
    for page, mark in ((ana, "X"), (bo, "O")):
        expect(page).to_have_url(room_re)
        expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "open")
        expect(page.get_by_test_id("my-mark")).to_have_text(mark)
        expect(page.get_by_test_id("my-mark")).to_have_attribute("data-seat", "seated")
        expect(page.get_by_test_id("player-X")).to_contain_text("ana")
        expect(page.get_by_test_id("player-O")).to_contain_text("bo")
    room = ana.url.rsplit("=", 1)[1]
    assert bo.url.endswith(f"?room={room}")
    expect(ana.get_by_test_id("room-code")).to_have_text(room)
    expect(ana.get_by_test_id("status")).to_have_text("Your turn")

    # The panel moved into the room; it knows nobody yet.
    board = ana.get_by_test_id("leaderboard")
    expect(ana.locator("#room").get_by_test_id("leaderboard")).to_be_visible()
    expect(board).to_have_attribute("data-state", "empty")

    play_top_row_win(ana, bo)

    # After the finished game: both players, ana first, with W/L/D and streak.
    for page in (ana, bo):
        rows = page.get_by_test_id("leaderboard").get_by_test_id("leaderboard-row")
        expect(rows).to_have_count(2, timeout=6_000)
        expect(rows.nth(0)).to_have_attribute("data-name", "ana")
        expect(rows.nth(0).locator(".lb-wld")).to_have_text("1/0/0")
        expect(rows.nth(0).locator(".lb-streak")).to_have_text("1")
        expect(rows.nth(1)).to_have_attribute("data-name", "bo")
        expect(rows.nth(1).locator(".lb-wld")).to_have_text("0/1/0")
        expect(rows.nth(1).locator(".lb-streak")).to_have_text("0")
    expect(ana.locator('[data-testid="leaderboard-row"].me')).to_have_attribute("data-name", "ana")
    ana.screenshot(path=str(screenshot_dir / "quick-match-leaderboard.png"))

    # A newcomer's lobby loads it too.
    cy = new_page()
    cy.goto(f"{server.url}/")
    rows = cy.get_by_test_id("leaderboard").get_by_test_id("leaderboard-row")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator(".lb-name")).to_have_text("ana")
    cy.screenshot(path=str(screenshot_dir / "lobby-leaderboard.png"), full_page=True)


def test_a_full_chat_log_keeps_the_newest_lines(server: UvicornServer, new_page: NewPage) -> None:
    """The log keeps the last 200 lines: past that, each new line still shows and the
    oldest leaves (scripted socket, 205 chat frames)."""
    room = room_code("chatlog")
    sockets: list[WebSocketRoute] = []

    def on_socket(ws: WebSocketRoute) -> None:
        sockets.append(ws)
        welcome = {"type": "welcome", "room": room, "server": "web-1", "protocol": 1}
        ws.send(json.dumps(welcome))
        ws.send(scripted_state(room, 5, "X........", turn="O"))

    page = new_page()
    page.route_web_socket(re.compile(r"/ws/game/"), on_socket)
    enter_from_lobby(page, server, room, "ana")
    expect(page.get_by_test_id("version")).to_have_text("v5")
    for n in range(205):
        sockets[0].send(
            json.dumps({"type": "chat", "mark": "O", "name": "bo", "text": f"line {n}"})
        )
    lines = page.get_by_test_id("chat-log").locator("li")
    expect(lines.last).to_have_text(re.compile(r"line 204$"))
    expect(lines).to_have_count(200)
    expect(lines.first).to_have_text(re.compile(r"line 5$"))
