"""The WebSocket protocol (docs/protocol.md) through the full ASGI stack.

Every test talks to `config.asgi.application` (origin check, auth middleware,
URL router, GameRoom) with `WebsocketCommunicator`, so what is proven here is
what a client on the wire sees. The consumer reaches the database from a
worker thread, hence transactional tests; the file runs on SQLite and on
PostgreSQL (DATABASE_URL).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.conf import settings as django_settings
from django.test import AsyncClient
from django.test import Client as HttpClient

from game.models import Room
from gameclient.codec import Frame
from realtime.replica import replica_name
from tests.support.timing import budget
from tests.support.ws import Client, Sockets, strict_json

# available_apps: the flush after each test empties only these apps' tables and
# skips re-creating content types and permissions (nothing here uses them), most
# of a transactional test's cost on PostgreSQL. Auth is there for AuthMiddlewareStack.
pytestmark = [
    pytest.mark.both_databases,
    pytest.mark.rabbitmq_layer,
    pytest.mark.django_db(
        transaction=True,
        available_apps=["game", "django.contrib.auth"],
    ),
]

ROOM = "room1"
EMPTY_BOARD: list[str | None] = [None] * 9
X_WINS_TOP_ROW = [0, 3, 1, 4, 2]  # X: 0 1 2, O: 3 4
DRAW = [0, 1, 2, 4, 3, 5, 7, 6, 8]  # X O X / X O O / O X X

# docs/protocol.md, "Presence and limits", the two promises the presence waits check
# (scaled by TEST_TIME_SCALE): a closed connection or a seat change shows in a `state`
# within one second; a new spectator is counted at the latest
# PRESENCE_CONNECT_DELAY_SECONDS after it connected (plus the slack this suite allows).
CLOSE_SHOWS_WITHIN = budget(1.0)
CONNECT_COUNTED_WITHIN = django_settings.PRESENCE_CONNECT_DELAY_SECONDS + budget(2.0)


def move(cell: object, **extra: object) -> Frame:
    return {"type": "move", "cell": cell, **extra}


async def seated(ws: Sockets, room: str = ROOM) -> tuple[Client, Client]:
    """Two connections holding X and O; both have seen the room at version 2."""
    x = await ws.open(room)
    await x.join("ana")
    o = await ws.open(room)
    await o.join("bo")
    await x.state_at(2)
    await o.state_at(2)
    return x, o


async def play(first: Client, second: Client, cells: list[int], version: int) -> Frame:
    """Alternate moves (first, second, first, ...) from `version`, each awaited; the last state."""
    state: Frame = {}
    for turn, cell in enumerate(cells):
        player = (first, second)[turn % 2]
        await player.send(move(cell))
        version += 1
        state = await player.state_at(version)
        assert state["board"][cell] == player.mark
    return state


async def assert_unchanged_and_alive(client: Client, state: Frame) -> None:
    """The connection still answers (ping -> pong) and the room is where it was."""
    await client.send({"type": "ping", "t": "alive"})
    assert await client.recv_type("pong") == {"type": "pong", "t": "alive"}
    now = await client.sync()
    assert now["version"] == state["version"]
    assert now["board"] == state["board"]
    assert now["players"] == state["players"]


async def room_count() -> int:
    return int(await database_sync_to_async(Room.objects.count)())


# --- connect ------------------------------------------------------------------


async def test_connect_gets_welcome_then_state(ws: Sockets) -> None:
    client = await ws.open("abc")

    assert client.welcome == {
        "type": "welcome",
        "room": "abc",
        "server": replica_name(),
        "protocol": 1,
    }
    assert client.welcome["server"]
    state = dict(client.first_state)
    assert isinstance(state.pop("presence_at"), int)  # when the presence was counted
    assert state == {
        "type": "state",
        "room": "abc",
        "version": 0,
        "board": EMPTY_BOARD,
        "turn": None,
        "status": "waiting",
        "winner": None,
        "line": None,
        "players": {"X": None, "O": None},
        "spectators": 1,
        "rematch": [],
    }


async def test_valid_room_codes_are_accepted(ws: Sockets) -> None:
    for code in ["a", "A-z_09", "x" * 32]:
        client = await ws.open(code)
        assert client.welcome["room"] == code
        assert client.first_state["room"] == code


async def test_bad_room_path_is_refused_in_handshake(ws: Sockets) -> None:
    paths = [
        "/ws/game/bad!code",
        "/ws/game/" + "a" * 33,
        "/ws/game/",
        "/ws/game/a/b",
        "/ws/game/spa ce",
        "/ws/game/caf\u00e9",
        "/ws/other",
        "/",
    ]

    connected = {path: (await ws.open(path=path, greet=False)).connected for path in paths}

    assert connected == dict.fromkeys(paths, False)
    assert await room_count() == 0


async def test_foreign_browser_origin_is_refused(ws: Sockets) -> None:
    client = await ws.open(headers=[(b"origin", b"http://evil.example")], greet=False)

    assert client.connected is False
    assert await room_count() == 0


async def test_allowed_browser_origin_is_accepted(ws: Sockets) -> None:
    for origin in [b"http://127.0.0.1", b"http://localhost:8000", b"https://localhost"]:
        client = await ws.open(headers=[(b"origin", origin)])
        assert client.welcome["type"] == "welcome", origin


async def test_missing_origin_is_accepted(ws: Sockets) -> None:
    client = await ws.open(headers=[])
    assert client.welcome["type"] == "welcome"
    assert client.first_state["type"] == "state"


# --- join ---------------------------------------------------------------------


async def test_first_join_gets_x_then_o_and_room_gets_state_with_players(ws: Sockets) -> None:
    spectator = await ws.open()
    ana = await ws.open()
    bo = await ws.open()

    joined = await ana.join("ana")
    assert joined["type"] == "joined"
    assert joined["mark"] == "X"
    assert isinstance(joined["token"], str)
    assert joined["token"]
    state = await spectator.state_at(1)
    assert state["players"] == {"X": {"name": "ana", "online": True}, "O": None}
    assert state["status"] == "waiting"
    assert state["turn"] is None

    joined = await bo.join("bo")
    assert joined["mark"] == "O"
    assert joined["token"] != ana.token
    for member in (spectator, ana, bo):
        state = await member.state_at(2)
        assert state["players"] == {
            "X": {"name": "ana", "online": True},
            "O": {"name": "bo", "online": True},
        }
        assert state["status"] == "playing"
        assert state["turn"] == "X"
        assert state["spectators"] == 1


async def test_join_reply_goes_to_the_joiner_only(ws: Sockets) -> None:
    spectator = await ws.open()
    ana = await ws.open()
    await ana.join("ana")
    await ana.state_at(1)

    kinds = [(frame["type"], frame["version"]) for frame in await spectator.settle()]
    assert ("state", 1) in kinds
    assert {kind for kind, _ in kinds} == {"state"}


async def test_second_join_gets_already_joined(ws: Sockets) -> None:
    ana = await ws.open()
    await ana.join("ana")
    before = await ana.sync()

    await ana.send({"type": "join", "name": "ana again"})

    assert await ana.error() == "already_joined"
    await assert_unchanged_and_alive(ana, before)


async def test_third_join_gets_room_full(ws: Sockets) -> None:
    await seated(ws)
    third = await ws.open()
    before = await third.sync()

    await third.send({"type": "join", "name": "cy"})

    assert await third.error() == "room_full"
    await assert_unchanged_and_alive(third, before)


async def test_join_accepts_1_to_32_printable_characters(ws: Sockets) -> None:
    for n, name in enumerate(["a", "x" * 32, "Zoë 🙂", "with space"]):
        client = await ws.open(f"names{n}")
        await client.join(name)
        state = await client.state_at(1)
        assert state["players"]["X"]["name"] == name


async def test_join_with_bad_name_gets_bad_message(ws: Sockets, roomy_limits: None) -> None:
    client = await ws.open()
    bad: dict[str, Frame] = {
        "empty": {"type": "join", "name": ""},
        "33 chars": {"type": "join", "name": "x" * 33},
        "tab": {"type": "join", "name": "tab\there"},
        "newline": {"type": "join", "name": "new\nline"},
        "nul": {"type": "join", "name": "nul\x00"},
        "bell": {"type": "join", "name": "bell\x07"},
        "number": {"type": "join", "name": 5},
        "null": {"type": "join", "name": None},
        "list": {"type": "join", "name": ["ana"]},
        "missing": {"type": "join"},
        "token not a string": {"type": "join", "name": "ana", "token": 5},
    }

    got = {}
    for label, message in bad.items():
        await client.send(message)
        got[label] = await client.error()
        await assert_unchanged_and_alive(client, client.first_state)

    assert got == dict.fromkeys(bad, "bad_message")
    assert (await client.sync())["players"] == {"X": None, "O": None}


async def test_token_reclaims_seat_from_new_connection(ws: Sockets) -> None:
    x, o = await seated(ws)
    token = x.token
    assert token is not None
    await x.close()
    await o.state_where(lambda s: s["players"]["X"]["online"] is False, CLOSE_SHOWS_WITHIN)

    again = await ws.open()
    joined = await again.join("whatever", token=token)

    assert joined == {"type": "joined", "mark": "X", "token": token}
    state = await o.state_where(lambda s: s["players"]["X"]["online"] is True)
    assert state["players"]["X"] == {"name": "ana", "online": True}
    assert state["players"]["O"] == {"name": "bo", "online": True}
    # The reclaimed seat plays and chats as X, under the seat's name.
    await again.send(move(4))
    assert (await o.state_at(3))["board"][4] == "X"
    await again.send({"type": "chat", "text": "back"})
    assert await o.recv_type("chat") == {"type": "chat", "mark": "X", "name": "ana", "text": "back"}


async def test_token_reclaims_seat_from_second_tab_while_first_is_open(ws: Sockets) -> None:
    x, o = await seated(ws)
    assert o.token is not None
    tab = await ws.open()

    joined = await tab.join("bo", token=o.token)

    assert joined["mark"] == "O"
    await x.send(move(0))
    await x.state_at(3)
    await tab.send(move(4))
    assert (await x.state_at(4))["board"][4] == "O"


async def test_unknown_token_gets_bad_token(ws: Sockets) -> None:
    await seated(ws)
    stranger = await ws.open()
    before = await stranger.sync()

    for token in ["not-a-token", ""]:
        await stranger.send({"type": "join", "name": "mallory", "token": token})

        assert await stranger.error() == "bad_token", token
        await assert_unchanged_and_alive(stranger, before)


async def test_token_from_another_room_gets_bad_token(ws: Sockets) -> None:
    elsewhere = await ws.open("other")
    await elsewhere.join("ana")
    assert elsewhere.token is not None
    await seated(ws)
    client = await ws.open()

    await client.send({"type": "join", "name": "ana", "token": elsewhere.token})

    assert await client.error() == "bad_token"


# --- move: errors in docs/protocol.md's order -------------------------------------


async def test_spectator_move_gets_not_joined(ws: Sockets) -> None:
    await seated(ws)
    spectator = await ws.open()
    before = await spectator.sync()

    await spectator.send(move(4))

    assert await spectator.error() == "not_joined"
    await assert_unchanged_and_alive(spectator, before)


async def test_not_joined_beats_bad_cell(ws: Sockets) -> None:
    await seated(ws)
    spectator = await ws.open()

    await spectator.send(move("x"))

    assert await spectator.error() == "not_joined"


async def test_move_with_bad_cell_gets_bad_cell(ws: Sockets, roomy_limits: None) -> None:
    x, _ = await seated(ws)
    before = await x.sync()
    cells = ['"4"', "9", "-1", "true", "false", "4.0", "4.5", "null", "[4]", "{}", None]

    got = {}
    for cell in cells:
        await x.send_text('{"type":"move"}' if cell is None else f'{{"type":"move","cell":{cell}}}')
        got[cell] = await x.error()
        await assert_unchanged_and_alive(x, before)

    assert got == dict.fromkeys(cells, "bad_cell")


async def test_bad_cell_beats_not_started(ws: Sockets) -> None:
    x = await ws.open()
    await x.join("ana")

    await x.send(move(9))

    assert await x.error() == "bad_cell"


async def test_move_before_opponent_sits_gets_not_started(ws: Sockets) -> None:
    x = await ws.open()
    await x.join("ana")
    before = await x.sync()

    await x.send(move(4))

    assert await x.error() == "not_started"
    await assert_unchanged_and_alive(x, before)


async def test_not_started_beats_stale_version(ws: Sockets) -> None:
    x = await ws.open()
    await x.join("ana")

    await x.send(move(4, version=0))

    assert await x.error() == "not_started"


async def test_move_after_win_gets_game_over(ws: Sockets) -> None:
    x, o = await seated(ws)
    end = await play(x, o, X_WINS_TOP_ROW, version=2)

    await o.send(move(8))

    assert await o.error() == "game_over"
    await assert_unchanged_and_alive(o, end)


async def test_move_after_draw_gets_game_over(ws: Sockets) -> None:
    x, o = await seated(ws)
    end = await play(x, o, DRAW, version=2)
    assert end["status"] == "draw"

    await x.send(move(0))

    assert await x.error() == "game_over"
    await assert_unchanged_and_alive(x, end)


async def test_bad_cell_beats_game_over(ws: Sockets) -> None:
    x, o = await seated(ws)
    await play(x, o, X_WINS_TOP_ROW, version=2)

    await o.send(move(-1))

    assert await o.error() == "bad_cell"


async def test_game_over_beats_stale_version_not_your_turn_and_cell_taken(ws: Sockets) -> None:
    x, o = await seated(ws)
    await play(x, o, X_WINS_TOP_ROW, version=2)

    # X moved last, cell 0 is taken and version 2 is stale: game_over still comes first.
    await x.send(move(0, version=2))

    assert await x.error() == "game_over"


async def test_move_with_stale_version_gets_stale_version(ws: Sockets) -> None:
    x, _ = await seated(ws)
    before = await x.sync()

    await x.send(move(4, version=1))

    assert await x.error() == "stale_version"
    await assert_unchanged_and_alive(x, before)


async def test_move_with_future_version_gets_stale_version(ws: Sockets) -> None:
    x, _ = await seated(ws)

    await x.send(move(4, version=3))

    assert await x.error() == "stale_version"


async def test_move_with_current_version_is_accepted(ws: Sockets) -> None:
    x, _ = await seated(ws)

    await x.send(move(4, version=2))

    assert (await x.state_at(3))["board"][4] == "X"


async def test_move_with_non_integer_version_gets_bad_message(
    ws: Sockets, roomy_limits: None
) -> None:
    x, _ = await seated(ws)
    before = await x.sync()
    versions = ['"2"', "true", "2.0", "[2]"]

    got = {}
    for version in versions:
        await x.send_text(f'{{"type":"move","cell":4,"version":{version}}}')
        got[version] = await x.error()
        await assert_unchanged_and_alive(x, before)

    assert got == dict.fromkeys(versions, "bad_message")


async def test_stale_version_beats_not_your_turn(ws: Sockets) -> None:
    _, o = await seated(ws)

    await o.send(move(4, version=1))

    assert await o.error() == "stale_version"


async def test_move_out_of_turn_gets_not_your_turn(ws: Sockets) -> None:
    _, o = await seated(ws)
    before = await o.sync()

    await o.send(move(4))

    assert await o.error() == "not_your_turn"
    await assert_unchanged_and_alive(o, before)


async def test_not_your_turn_beats_cell_taken(ws: Sockets) -> None:
    x, o = await seated(ws)
    await play(x, o, [4], version=2)

    await x.send(move(4))

    assert await x.error() == "not_your_turn"


async def test_move_to_taken_cell_gets_cell_taken(ws: Sockets) -> None:
    x, o = await seated(ws)
    before = await play(x, o, [4], version=2)

    await o.send(move(4))

    assert await o.error() == "cell_taken"
    await assert_unchanged_and_alive(o, before)


# --- move: accepted -----------------------------------------------------------


async def test_legal_move_broadcasts_next_version_to_players_and_spectator(ws: Sockets) -> None:
    x, o = await seated(ws)
    spectator = await ws.open()

    await x.send(move(4))

    for member in (x, o, spectator):
        state = await member.state_at(3)
        assert state["board"] == [None, None, None, None, "X", None, None, None, None]
        assert state["turn"] == "O"
        assert state["status"] == "playing"
        assert state["winner"] is None
        assert state["line"] is None


async def test_game_to_a_win_reports_winner_and_line(ws: Sockets) -> None:
    x, o = await seated(ws)
    spectator = await ws.open()

    end = await play(x, o, X_WINS_TOP_ROW, version=2)

    for state in (end, await o.state_at(7), await spectator.state_at(7)):
        assert state["status"] == "won"
        assert state["winner"] == "X"
        assert state["line"] == [0, 1, 2]
        assert state["turn"] is None
        assert state["board"] == ["X", "X", "X", "O", "O", None, None, None, None]


async def test_game_to_a_draw_reports_draw(ws: Sockets) -> None:
    x, o = await seated(ws)

    end = await play(x, o, DRAW, version=2)

    for state in (end, await o.state_at(11)):
        assert state["status"] == "draw"
        assert state["winner"] is None
        assert state["line"] is None
        assert state["turn"] is None
        assert None not in state["board"]


async def test_version_grows_by_exactly_one_per_seat_change_move_and_new_game(
    ws: Sockets,
) -> None:
    spectator = await ws.open()
    x = await ws.open()
    o = await ws.open()
    await x.join("ana")  # 1
    await x.state_at(1)
    await o.join("bo")  # 2
    await o.state_at(2)
    await play(x, o, X_WINS_TOP_ROW, version=2)  # 3..7
    await x.send({"type": "rematch"})  # recorded: no version change
    await x.state_where(lambda s: s["rematch"] == ["X"])
    await o.send({"type": "rematch"})  # 8: new game, O opens
    await o.state_at(8)
    await play(o, x, [4], version=8)  # 9

    versions = [spectator.first_state["version"]]
    while versions[-1] != 9:
        versions.append((await spectator.recv_type("state"))["version"])
    # The spectator saw every version once or more, in order, each step +0 or +1.
    assert sorted(set(versions)) == list(range(10))
    assert all(later - earlier in (0, 1) for earlier, later in itertools.pairwise(versions))


async def test_version_is_unchanged_by_spectators_and_presence(ws: Sockets) -> None:
    x, o = await seated(ws)

    extra = await ws.open()
    await x.state_where(lambda s: s["spectators"] == 1, CONNECT_COUNTED_WITHIN)
    await extra.close()
    await x.state_where(lambda s: s["spectators"] == 0, CLOSE_SHOWS_WITHIN)
    await o.close()
    await x.state_where(lambda s: s["players"]["O"]["online"] is False, CLOSE_SHOWS_WITHIN)

    assert (await x.sync())["version"] == 2


# --- chat ---------------------------------------------------------------------


async def test_spectator_chat_gets_not_joined(ws: Sockets) -> None:
    spectator = await ws.open()

    await spectator.send({"type": "chat", "text": "hi"})

    assert await spectator.error() == "not_joined"
    await assert_unchanged_and_alive(spectator, spectator.first_state)


async def test_chat_with_bad_text_gets_bad_message(ws: Sockets, roomy_limits: None) -> None:
    x = await ws.open()
    await x.join("ana")
    before = await x.sync()
    bad: dict[str, Frame] = {
        "empty": {"type": "chat", "text": ""},
        "281 chars": {"type": "chat", "text": "x" * 281},
        "number": {"type": "chat", "text": 5},
        "null": {"type": "chat", "text": None},
        "list": {"type": "chat", "text": ["gg"]},
        "missing": {"type": "chat"},
    }

    got = {}
    for label, message in bad.items():
        await x.send(message)
        got[label] = await x.error()
        await assert_unchanged_and_alive(x, before)

    assert got == dict.fromkeys(bad, "bad_message")
    assert [f for f in await x.settle() if f["type"] == "chat"] == []


async def test_chat_reaches_every_member_with_mark_name_and_text(ws: Sockets) -> None:
    x, o = await seated(ws)
    spectator = await ws.open()
    texts = ["gg", "x" * 280, "é" * 280]

    for text in texts:
        await o.send({"type": "chat", "text": text})

    for member in (x, o, spectator):
        chats = [await member.recv_type("chat") for _ in texts]
        assert chats == [{"type": "chat", "mark": "O", "name": "bo", "text": t} for t in texts]


# --- rematch ------------------------------------------------------------------


async def test_spectator_rematch_gets_not_joined(ws: Sockets) -> None:
    x, o = await seated(ws)
    await play(x, o, X_WINS_TOP_ROW, version=2)
    spectator = await ws.open()

    await spectator.send({"type": "rematch"})

    assert await spectator.error() == "not_joined"


async def test_rematch_while_waiting_gets_not_over(ws: Sockets) -> None:
    x = await ws.open()
    await x.join("ana")

    await x.send({"type": "rematch"})

    assert await x.error() == "not_over"


async def test_rematch_while_playing_gets_not_over(ws: Sockets) -> None:
    x, o = await seated(ws)
    before = await play(x, o, [4], version=2)

    await o.send({"type": "rematch"})

    assert await o.error() == "not_over"
    await assert_unchanged_and_alive(o, before)
    assert (await o.sync())["rematch"] == []


async def test_one_rematch_request_shows_in_state_without_version_change(ws: Sockets) -> None:
    x, o = await seated(ws)
    spectator = await ws.open()
    end = await play(x, o, X_WINS_TOP_ROW, version=2)

    await o.send({"type": "rematch"})

    for member in (x, o, spectator):
        state = await member.state_where(lambda s: s["rematch"] == ["O"])
        assert state["version"] == end["version"]
        assert state["board"] == end["board"]
        assert state["status"] == "won"


async def test_both_rematch_requests_start_new_game_with_other_opener(ws: Sockets) -> None:
    x, o = await seated(ws)
    spectator = await ws.open()
    end = await play(x, o, X_WINS_TOP_ROW, version=2)

    await x.send({"type": "rematch"})
    await x.state_where(lambda s: s["rematch"] == ["X"])
    await o.send({"type": "rematch"})

    for member in (x, o, spectator):
        state = await member.state_at(end["version"] + 1)
        assert state["board"] == EMPTY_BOARD
        assert state["status"] == "playing"
        assert state["turn"] == "O"
        assert state["winner"] is None
        assert state["line"] is None
        assert state["rematch"] == []
        assert state["players"] == end["players"]

    await x.send(move(4))
    assert await x.error() == "not_your_turn"
    await o.send(move(4))
    assert (await x.state_at(end["version"] + 2))["board"][4] == "O"


async def test_second_new_game_hands_the_opening_back_to_x(ws: Sockets) -> None:
    x, o = await seated(ws)
    await play(x, o, X_WINS_TOP_ROW, version=2)  # 7
    await x.send({"type": "rematch"})
    await x.state_where(lambda s: s["rematch"] == ["X"])
    await o.send({"type": "rematch"})
    await x.state_at(8)
    await play(o, x, [0, 3, 1, 4, 2], version=8)  # O wins: 13
    await o.send({"type": "rematch"})
    await o.state_where(lambda s: s["rematch"] == ["O"])

    await x.send({"type": "rematch"})

    state = await x.state_at(14)
    assert state["turn"] == "X"
    assert state["board"] == EMPTY_BOARD


# --- bot ----------------------------------------------------------------------


async def test_spectator_bot_gets_not_joined(ws: Sockets) -> None:
    spectator = await ws.open()

    await spectator.send({"type": "bot"})

    assert await spectator.error() == "not_joined"
    await assert_unchanged_and_alive(spectator, spectator.first_state)


async def test_bot_in_full_room_gets_room_full(ws: Sockets) -> None:
    x, _ = await seated(ws)
    before = await x.sync()

    await x.send({"type": "bot"})

    assert await x.error() == "room_full"
    await assert_unchanged_and_alive(x, before)


async def test_invited_bot_takes_empty_seat_and_answers_a_move(ws: Sockets, settings: Any) -> None:
    settings.BOT_THINK_SECONDS = 0
    x = await ws.open()
    await x.join("ana")
    spectator = await ws.open()

    await x.send({"type": "bot"})

    state = await spectator.state_at(2)
    assert state["players"]["X"] == {"name": "ana", "online": True}
    assert state["players"]["O"]["bot"] is True
    assert state["players"]["O"]["online"] is True
    assert state["status"] == "playing"
    assert state["turn"] == "X"

    await x.send(move(4))

    answered = await spectator.state_at(4)
    assert answered["board"][4] == "X"
    assert answered["board"].count("O") == 1
    assert answered["turn"] == "X"


async def test_perfect_bot_never_loses(ws: Sockets, settings: Any) -> None:
    settings.BOT_THINK_SECONDS = 0
    scripts = [  # X takes the first free cell in its list
        [4, 0, 2, 6, 8, 1, 3, 5, 7],
        [0, 8, 2, 6, 4, 1, 3, 5, 7],
        [0, 1, 2, 3, 4, 5, 6, 7, 8],
        [1, 3, 5, 7, 0, 2, 4, 6, 8],
        [8, 7, 6, 5, 4, 3, 2, 1, 0],
    ]

    for n, preference in enumerate(scripts):
        x = await ws.open(f"bot{n}")
        await x.join("ana")
        await x.send({"type": "bot", "level": "perfect"})
        state = await x.state_at(2)
        while state["status"] == "playing":
            assert state["turn"] == "X"
            cell = next(c for c in preference if state["board"][c] is None)
            await x.send(move(cell))
            state = await x.state_at(state["version"] + 1)
            if state["status"] == "playing":
                state = await x.state_at(state["version"] + 1)  # the bot's answer

        assert state["status"] in ("draw", "won"), preference
        assert state["winner"] != "X", (preference, state["board"])


async def test_rematch_against_bot_starts_new_game_and_bot_opens(
    ws: Sockets, settings: Any
) -> None:
    settings.BOT_THINK_SECONDS = 0
    x = await ws.open()
    await x.join("ana")
    await x.send({"type": "bot"})
    state = await x.state_at(2)
    while state["status"] == "playing":
        cell = state["board"].index(None)
        await x.send(move(cell))
        state = await x.state_at(state["version"] + 1)
        if state["status"] == "playing":
            state = await x.state_at(state["version"] + 1)

    await x.send({"type": "rematch"})

    fresh = await x.state_at(state["version"] + 1)
    assert fresh["board"] == EMPTY_BOARD
    assert fresh["turn"] == "O"
    opened = await x.state_at(state["version"] + 2)
    assert opened["board"].count("O") == 1
    assert opened["turn"] == "X"


# --- sync, ping ---------------------------------------------------------------


async def test_sync_sends_state_to_sender_only(ws: Sockets) -> None:
    x, o = await seated(ws)
    await o.settle()

    state = await x.sync()

    assert state["type"] == "state"
    assert state["version"] == 2
    assert await o.settle() == []


async def test_ping_gets_pong_with_same_t_to_sender_only(ws: Sockets) -> None:
    client = await ws.open()
    other = await ws.open()
    await client.settle()  # the count broadcast `other`'s connect scheduled, out of the way

    for t in [123, 1.5, -7, "abc", "", {"a": [1, None]}, [1, 2], None, True]:
        await client.send({"type": "ping", "t": t})
        assert await client.recv() == {"type": "pong", "t": t}

    assert [f for f in await other.settle() if f["type"] != "state"] == []


# --- seed tutorial relay -----------------------------------------------------


async def test_relay_reaches_every_member_including_sender(ws: Sockets) -> None:
    x, o = await seated(ws)
    spectator = await ws.open()
    values = [{"x": 1, "y": [True, None]}, [1, "two", 3.5], None, "hello", "", 0, False, {}]

    for value in values:
        await spectator.send({"data": value})

    for member in (spectator, x, o):
        payloads = [await member.recv_until(lambda f: "payload" in f) for _ in values]
        assert payloads == [{"payload": value} for value in values]


# --- bad input ----------------------------------------------------------------


async def test_bad_input_gets_error_and_connection_keeps_working(
    ws: Sockets, roomy_limits: None
) -> None:
    x, o = await seated(ws)
    before = await play(x, o, [4], version=2)
    frames: list[tuple[str | bytes, str]] = [
        ("not json", "bad_json"),
        ("{", "bad_json"),
        ("[1, 2]", "bad_json"),
        ("[]", "bad_json"),
        ("5", "bad_json"),
        ('"move"', "bad_json"),
        ("null", "bad_json"),
        ("{}", "unknown_type"),
        ('{"type":"nope"}', "unknown_type"),
        ('{"cell":4}', "unknown_type"),
        ('{"type":5}', "bad_message"),
        ('{"type":["move"]}', "bad_message"),
        (b'{"type":"sync"}', "bad_message"),
        (b"\x00\xff", "bad_message"),
    ]

    got = {}
    for frame, _ in frames:
        if isinstance(frame, bytes):
            await x.send_bytes(frame)
        else:
            await x.send_text(frame)
        error = await x.recv_type("error")
        assert isinstance(error["message"], str)
        got[frame] = error["code"]
        await assert_unchanged_and_alive(x, before)

    assert got == dict(frames)


async def test_nan_and_infinity_are_not_json_and_get_bad_json(
    ws: Sockets, roomy_limits: None
) -> None:
    x, o = await seated(ws)
    before = await x.sync()
    frames = [
        '{"data":NaN}',
        '{"data":Infinity}',
        '{"data":[-Infinity]}',
        '{"type":"ping","t":NaN}',
    ]

    got = {}
    for frame in frames:
        await x.send_text(frame)
        got[frame] = await x.error()  # the client helper itself rejects a non-JSON reply
        await assert_unchanged_and_alive(x, before)

    assert got == dict.fromkeys(frames, "bad_json")
    assert [f for f in await o.settle() if "payload" in f] == []


async def test_lone_surrogate_never_becomes_a_frame_that_is_not_utf8(
    ws: Sockets, roomy_limits: None
) -> None:
    # "\ud800" is a valid JSON escape but no UTF-8 text: echoing it unescaped gives a frame
    # the ASGI server cannot encode (uvicorn raises UnicodeEncodeError in every receiver).
    x, o = await seated(ws)
    frames = {
        "relay": '{"data":"\\ud800"}',
        "chat": '{"type":"chat","text":"\\ud800"}',
        "ping": '{"type":"ping","t":"\\ud800"}',
    }
    await x.settle()
    await o.settle()

    unencodable = {}
    for label, frame in frames.items():
        await x.send_text(frame)
        # The sender first: its message is handled (and relayed) before its marker.
        texts = await x.settle_texts()
        texts += await o.settle_texts()
        unencodable[label] = [t for t in texts if not _utf8(t)]

    assert unencodable == {label: [] for label in frames}
    await assert_unchanged_and_alive(x, await o.sync())


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def test_deeply_nested_json_gets_an_answer_not_a_server_error(ws: Sockets) -> None:
    nested = "[" * 5000 + "]" * 5000
    frames = {
        "unclosed arrays (not JSON)": "[" * 5000,
        "nested relay data (a JSON object)": '{"data":' + nested + "}",
    }

    answers = {}
    for label, frame in frames.items():
        assert len(frame.encode()) <= django_settings.MAX_FRAME_BYTES
        client = await ws.open()
        await client.settle()  # the count broadcast of this connect, out of the way
        await client.send_text(frame)
        answer = await client.output()
        if answer["type"] == "websocket.close":
            answers[label] = f"closed {answer.get('code')}"
            continue
        reply = strict_json(answer["text"])
        answers[label] = "payload" if "payload" in reply else str(reply.get("code", reply["type"]))
        await client.send({"type": "ping", "t": 1})
        assert await client.recv_type("pong") == {"type": "pong", "t": 1}

    # Not JSON is bad_json; the relay may carry the value or refuse it, but never as 1011.
    assert answers["unclosed arrays (not JSON)"] == "bad_json", answers
    assert answers["nested relay data (a JSON object)"] in ("payload", "bad_json"), answers


async def test_error_goes_to_sender_only(ws: Sockets) -> None:
    x, o = await seated(ws)
    await o.settle()

    await x.send_text("not json")

    assert await x.error() == "bad_json"
    assert await o.settle() == []


# --- oversize frames ----------------------------------------------------------


def relay_frame(pad: str) -> str:
    return json.dumps({"data": pad}, ensure_ascii=False)


RELAY_OVERHEAD = len(relay_frame(""))  # {"data": ""}


async def test_oversize_frame_closes_with_1009(ws: Sockets) -> None:
    room = 16384 - RELAY_OVERHEAD
    pads = {
        "one byte over": "a" * (room + 1),
        "40000 bytes": "a" * 40000,
        "2-byte chars": "é" * (room // 2 + 1),  # fewer characters than the limit, more bytes
        "4-byte chars": "😀" * (room // 4 + 1),  # about 4100 characters
    }

    closed = {}
    for label, pad in pads.items():
        frame = relay_frame(pad)
        assert len(frame.encode()) > django_settings.MAX_FRAME_BYTES == 16384
        client = await ws.open()
        await client.send_text(frame)
        closed[label] = await client.close_code_received()

    assert closed == dict.fromkeys(pads, 1009)


async def test_frame_of_exactly_max_bytes_is_accepted(ws: Sockets) -> None:
    room = 16384 - RELAY_OVERHEAD
    client = await ws.open()

    for pad in ["a" * room, "é" * (room // 2) + "a" * (room % 2)]:
        frame = relay_frame(pad)
        assert len(frame.encode()) == 16384
        await client.send_text(frame)
        assert await client.recv_until(lambda f: "payload" in f) == {"payload": pad}


async def test_oversize_frame_is_not_relayed_to_others(ws: Sockets) -> None:
    sender = await ws.open()
    other = await ws.open()
    await other.settle()

    await sender.send_text(relay_frame("a" * 20000))

    assert await sender.close_code_received() == 1009
    assert [f for f in await other.settle() if "payload" in f] == []


# --- rate limit ---------------------------------------------------------------


async def test_messages_beyond_20_per_second_get_rate_limited_and_are_dropped(
    ws: Sockets,
) -> None:
    sender = await ws.open()
    other = await ws.open()
    await sender.settle()  # the count broadcast of `other`'s connect, out of the way
    await other.settle()

    for n in range(25):
        await sender.send({"data": n})

    frames = [await sender.recv() for _ in range(25)]
    payloads = [f["payload"] for f in frames if "payload" in f]
    errors = [f["code"] for f in frames if f.get("type") == "error"]
    assert payloads == list(range(20))
    assert errors == ["rate_limited"] * 5
    assert await sender.settle() == []
    assert [f["payload"] for f in await other.settle() if "payload" in f] == list(range(20))


async def test_rate_limit_frees_up_after_one_second(ws: Sockets) -> None:
    client = await ws.open()
    await client.settle()
    for n in range(21):
        await client.send({"type": "ping", "t": n})
    answers = [await client.recv_until(lambda f: f.get("type") != "state") for _ in range(21)]
    assert answers[-1]["code"] == "rate_limited"

    # Not a wait for an event: the limiter's window is one second of time itself.
    await asyncio.sleep(1.05)
    await client.send({"type": "ping", "t": "again"})

    assert await client.recv_type("pong") == {"type": "pong", "t": "again"}


async def test_more_than_100_messages_per_second_close_with_1008(ws: Sockets) -> None:
    client = await ws.open()
    await client.settle()

    for n in range(101):
        await client.send({"type": "ping", "t": n})

    outputs = [await client.output() for _ in range(101)]
    frames = [json.loads(o["text"]) for o in outputs[:-1]]
    assert [f["t"] for f in frames if f["type"] == "pong"] == list(range(20))
    assert [f["code"] for f in frames if f["type"] == "error"] == ["rate_limited"] * 80
    assert outputs[-1] == {"type": "websocket.close", "code": 1008}


async def test_binary_frames_count_toward_the_rate_limit(ws: Sockets) -> None:
    client = await ws.open()
    await client.settle()

    for _ in range(101):
        await client.send_bytes(b"\x00")

    outcome: list[str] = []
    for _ in range(101):
        message = await client.output()
        if message["type"] == "websocket.close":
            outcome.append(f"close {message.get('code')}")
            break
        outcome.append(json.loads(message["text"])["code"])
    assert outcome == ["bad_message"] * 20 + ["rate_limited"] * 80 + ["close 1008"]


async def test_rate_limit_values_come_from_settings(ws: Sockets, settings: Any) -> None:
    settings.RATE_LIMIT_PER_SECOND = 2
    settings.RATE_LIMIT_CLOSE_PER_SECOND = 4
    client = await ws.open()
    await client.settle()

    for n in range(5):
        await client.send({"type": "ping", "t": n})

    outputs = [await client.output() for _ in range(5)]
    frames = [json.loads(o["text"]) for o in outputs[:4]]
    assert frames[:2] == [{"type": "pong", "t": 0}, {"type": "pong", "t": 1}]
    assert [f["code"] for f in frames[2:]] == ["rate_limited", "rate_limited"]
    assert outputs[4] == {"type": "websocket.close", "code": 1008}


# --- presence -----------------------------------------------------------------


async def test_closing_seated_players_connection_shows_seat_offline(ws: Sockets) -> None:
    x, o = await seated(ws)
    spectator = await ws.open()

    await x.close()

    for member in (o, spectator):
        state = await member.state_where(
            lambda s: s["players"]["X"]["online"] is False, CLOSE_SHOWS_WITHIN
        )
        assert state["players"]["X"]["name"] == "ana"
        assert state["players"]["O"] == {"name": "bo", "online": True}


async def test_seat_stays_online_while_another_connection_holds_it(ws: Sockets) -> None:
    x, o = await seated(ws)
    assert x.token is not None
    tab = await ws.open()
    await tab.join("ana", token=x.token)

    await x.close()  # returns once the server has handled the close

    assert (await o.sync())["players"]["X"]["online"] is True
    await tab.close()
    await o.state_where(lambda s: s["players"]["X"]["online"] is False, CLOSE_SHOWS_WITHIN)


async def test_spectator_count_follows_connects_and_disconnects(ws: Sockets) -> None:
    first = await ws.open()
    assert first.first_state["spectators"] == 1

    second = await ws.open()
    assert second.first_state["spectators"] == 2
    await first.state_where(lambda s: s["spectators"] == 2, CONNECT_COUNTED_WITHIN)
    third = await ws.open()
    await first.state_where(lambda s: s["spectators"] == 3, CONNECT_COUNTED_WITHIN)

    await third.close()
    await first.state_where(lambda s: s["spectators"] == 2, CLOSE_SHOWS_WITHIN)
    await second.join("bo")  # a seated connection is a player, not a spectator
    state = await first.state_at(1)
    assert state["spectators"] == 1
    await second.close()
    state = await first.state_where(
        lambda s: s["players"]["X"]["online"] is False, CLOSE_SHOWS_WITHIN
    )
    assert state["spectators"] == 1


# --- HTTP ---------------------------------------------------------------------


async def test_room_api_returns_the_websocket_state(ws: Sockets, async_client: AsyncClient) -> None:
    x, o = await seated(ws)
    await play(x, o, [4, 0], version=2)
    state = await x.sync()

    response = await async_client.get(f"/api/rooms/{ROOM}")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    # The same state; its presence counted again, later.
    api = response.json()
    assert api.pop("presence_at") >= state.pop("presence_at")
    assert api == state


def test_room_api_for_unknown_room_is_404_json(client: HttpClient) -> None:
    response = client.get("/api/rooms/nosuchroom")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "not_found"


def test_room_api_for_invalid_code_is_404_json(client: HttpClient) -> None:
    for code in ["bad!code", "a" * 33, "caf%C3%A9"]:
        response = client.get(f"/api/rooms/{code}")

        assert response.status_code == 404, code
        assert response.json()["error"] == "not_found"


def test_healthz_is_200(client: HttpClient) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
