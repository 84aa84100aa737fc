"""The service layer called directly: seats, tokens, moves, rematches, bots, presence.

Runs on SQLite (`make test-sqlite`) and on PostgreSQL (`make test-postgres`).
Every rejected call is also checked to leave the room row exactly as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from django.utils import timezone

from game import presence, services
from game.exceptions import GameError
from game.models import Connection, Replica, Room
from game.rules import Mark
from game.selectors import room_state
from game.services import SeatGrant, token_hash

pytestmark = [pytest.mark.both_databases, pytest.mark.django_db]

ROOM = "r1"
REPLICA = "web-test-1"

STATE_KEYS = {
    "type",
    "room",
    "version",
    "board",
    "turn",
    "status",
    "winner",
    "line",
    "players",
    "spectators",
    "rematch",
    "presence_at",
}
# X wins on the top row; O has 3 and 4.
X_WINS: list[tuple[Mark, int]] = [("X", 0), ("O", 3), ("X", 1), ("O", 4), ("X", 2)]


# --- helpers ------------------------------------------------------------------


def row(code: str = ROOM) -> dict[str, Any]:
    """Every column of the room, to compare before and after a call."""
    return dict(Room.objects.filter(code=code).values().get())


def version(code: str = ROOM) -> int:
    return int(row(code)["version"])


def connect(channel: str, *, code: str = ROOM, replica: str = REPLICA) -> str:
    presence.connection_open(code=code, channel_name=channel, replica=replica)
    return channel


def join(channel: str, name: str, *, code: str = ROOM, token: str | None = None) -> SeatGrant:
    return services.seat_join(code=code, channel_name=channel, held=None, name=name, token=token)


def seated_room(code: str = ROOM) -> tuple[SeatGrant, SeatGrant]:
    """A room with ana at X and bo at O, both connected: version 2, X to move."""
    x = join(connect(f"{code}-ana", code=code), "ana", code=code)
    o = join(connect(f"{code}-bo", code=code), "bo", code=code)
    return x, o


def play(moves: list[tuple[Mark, int]], code: str = ROOM) -> int:
    new_version = version(code)
    for mark, cell in moves:
        new_version = services.move_play(code=code, mark=mark, cell=cell, version=None)
    return new_version


def rejected(code_expected: str, call: Callable[[], object], room: str = ROOM) -> None:
    """`call` raises GameError(code_expected) and leaves the room row untouched."""
    before = row(room)
    with pytest.raises(GameError) as caught:
        call()
    assert caught.value.code == code_expected, caught.value
    assert row(room) == before


def move(mark: Mark | None, cell: object, version: int | None = None) -> Callable[[], int]:
    return lambda: services.move_play(code=ROOM, mark=mark, cell=cell, version=version)


def state(code: str = ROOM) -> dict[str, Any]:
    found = room_state(code)
    assert found is not None
    return dict(found)


# --- seats and tokens -----------------------------------------------------------


def test_seats_go_to_x_then_o_and_each_bumps_the_version_by_one() -> None:
    connect("c1")
    assert version() == 0
    x = join("c1", "ana")
    assert (x.mark, x.name, version()) == ("X", "ana", 1)
    o = join(connect("c2"), "bo")
    assert (o.mark, o.name, version()) == ("O", "bo", 2)
    marks = dict(Connection.objects.values_list("channel_name", "mark"))
    assert marks == {"c1": "X", "c2": "O"}
    assert state()["status"] == "playing"


def test_seat_token_is_stored_only_as_its_sha256() -> None:
    x, o = seated_room()
    assert x.token != o.token
    stored = row()
    assert stored["x_token_hash"] == token_hash(x.token)
    assert stored["o_token_hash"] == token_hash(o.token)
    values = [str(value) for value in stored.values()]
    assert not any(grant.token in value for grant in (x, o) for value in values)


def test_token_reclaims_its_seat_from_another_connection_without_a_version_change() -> None:
    x, o = seated_room()
    before = row()
    again = join(connect("tab-2"), "someone-else", token=o.token)
    assert again == SeatGrant(mark="O", name="bo", token=o.token)
    assert Connection.objects.get(channel_name="tab-2").mark == "O"
    assert row() == before  # the seat did not change hands
    assert join(connect("tab-3"), "x-again", token=x.token).mark == "X"


def test_bad_token_is_refused_and_changes_nothing() -> None:
    seated_room()
    connect("c3")
    rejected("bad_token", lambda: join("c3", "eve", token="not-a-token"))
    rejected("bad_token", lambda: join("c3", "eve", token=""))
    assert Connection.objects.get(channel_name="c3").mark == ""


def test_token_from_another_room_is_a_bad_token() -> None:
    other_x, _ = seated_room("other")
    seated_room(ROOM)
    rejected("bad_token", lambda: join(connect("c3"), "eve", token=other_x.token))


def test_bad_token_even_while_a_seat_is_free() -> None:
    join(connect("c1"), "ana")
    rejected("bad_token", lambda: join(connect("c2"), "bo", token="forged"))
    assert row()["o_name"] == ""


def test_third_player_gets_room_full() -> None:
    seated_room()
    rejected("room_full", lambda: join(connect("c3"), "cy"))


def test_already_joined_comes_first() -> None:
    x, _ = seated_room()
    for token in (None, x.token, "garbage"):
        rejected(
            "already_joined",
            partial(
                services.seat_join,
                code=ROOM,
                channel_name="r1-ana",
                held="X",
                name="ana",
                token=token,
            ),
        )


# --- moves ------------------------------------------------------------------------


def test_each_accepted_move_bumps_the_version_by_one() -> None:
    seated_room()
    for expected, (mark, cell) in enumerate(X_WINS, start=3):
        assert services.move_play(code=ROOM, mark=mark, cell=cell, version=expected - 1) == expected
        assert version() == expected
    final = state()
    assert final["status"] == "won"
    assert final["winner"] == "X"
    assert final["line"] == [0, 1, 2]
    assert final["turn"] is None


@pytest.mark.parametrize(
    "cell", [-1, 9, 100, "4", 4.0, True, False, None, [4], {"cell": 4}], ids=repr
)
def test_bad_cell_is_anything_but_an_int_from_0_to_8(cell: object) -> None:
    seated_room()
    rejected("bad_cell", move("X", cell))


def test_not_joined_before_everything() -> None:
    seated_room()
    rejected("not_joined", move(None, 4))
    rejected("not_joined", move(None, 99, version=12345))
    play(X_WINS)
    rejected("not_joined", move(None, "nope"))


def test_not_joined_in_an_empty_room() -> None:
    connect("c1")
    rejected("not_joined", move(None, 0))


def test_bad_cell_before_game_over() -> None:
    seated_room()
    play(X_WINS)
    rejected("bad_cell", move("O", 9))
    rejected("game_over", move("O", 8))
    rejected("game_over", move("X", 8, version=0))  # game_over before stale_version
    rejected("game_over", move("X", 0))  # game_over before cell_taken


def test_game_over_after_a_draw() -> None:
    seated_room()
    draw: list[tuple[Mark, int]] = [
        ("X", 0),
        ("O", 1),
        ("X", 2),
        ("O", 4),
        ("X", 3),
        ("O", 5),
        ("X", 7),
        ("O", 6),
        ("X", 8),
    ]
    play(draw)
    final = state()
    assert (final["status"], final["winner"], final["line"], final["turn"]) == (
        "draw",
        None,
        None,
        None,
    )
    rejected("game_over", move("O", 4))


def test_game_over_before_not_started() -> None:
    """A finished board with an empty seat (only reachable by editing the row)."""
    join(connect("c1"), "ana")
    Room.objects.filter(code=ROOM).update(board="XXXOO....")
    rejected("game_over", move("X", 8))


def test_not_started_before_stale_version_and_turn() -> None:
    join(connect("c1"), "ana")
    rejected("not_started", move("X", 4))
    rejected("not_started", move("X", 4, version=99))
    rejected("not_started", move("O", 4, version=99))


def test_stale_version_before_not_your_turn_and_cell_taken() -> None:
    seated_room()
    services.move_play(code=ROOM, mark="X", cell=4, version=2)
    rejected("stale_version", move("O", 0, version=2))  # would be fine at 3
    rejected("stale_version", move("X", 0, version=2))  # also not X's turn
    rejected("stale_version", move("O", 4, version=2))  # also cell taken
    rejected("stale_version", move("O", 0, version=4))  # versions from the future too


def test_not_your_turn_before_cell_taken() -> None:
    seated_room()
    services.move_play(code=ROOM, mark="X", cell=4, version=None)
    rejected("not_your_turn", move("X", 0))
    rejected("not_your_turn", move("X", 4))
    rejected("not_your_turn", move("X", 4, version=3))
    rejected("cell_taken", move("O", 4))
    rejected("cell_taken", move("O", 4, version=3))


def test_move_with_the_current_version_is_accepted() -> None:
    seated_room()
    assert services.move_play(code=ROOM, mark="X", cell=8, version=2) == 3
    assert state()["board"] == [None] * 8 + ["X"]


# --- rematch ---------------------------------------------------------------------


def test_rematch_needs_a_seat_and_a_finished_game() -> None:
    seated_room()
    rejected("not_joined", lambda: services.rematch_request(code=ROOM, mark=None))
    rejected("not_over", lambda: services.rematch_request(code=ROOM, mark="X"))
    play([("X", 4)])
    rejected("not_over", lambda: services.rematch_request(code=ROOM, mark="O"))


def test_rematch_request_alone_does_not_bump_the_version() -> None:
    seated_room()
    finished = play(X_WINS)
    assert services.rematch_request(code=ROOM, mark="X") is False
    assert version() == finished
    assert state()["rematch"] == ["X"]
    assert services.rematch_request(code=ROOM, mark="X") is False  # asking twice is one ask
    assert state()["rematch"] == ["X"]
    assert version() == finished


def test_rematch_when_both_asked_starts_a_new_game_and_the_other_mark_opens() -> None:
    seated_room()
    finished = play(X_WINS)
    games = row()["games_started"]
    services.rematch_request(code=ROOM, mark="O")
    assert state()["rematch"] == ["O"]
    assert services.rematch_request(code=ROOM, mark="X") is True
    fresh = state()
    assert fresh["version"] == finished + 1
    assert fresh["board"] == [None] * 9
    assert (fresh["status"], fresh["turn"], fresh["winner"], fresh["line"]) == (
        "playing",
        "O",
        None,
        None,
    )
    assert fresh["rematch"] == []
    assert row()["games_started"] == games + 1
    rejected("not_your_turn", move("X", 4))
    # The next game goes back to X.
    play([("O", 0), ("X", 3), ("O", 1), ("X", 4), ("O", 2)])
    assert state()["winner"] == "O"
    services.rematch_request(code=ROOM, mark="X")
    services.rematch_request(code=ROOM, mark="O")
    assert state()["turn"] == "X"
    assert row()["games_started"] == games + 2


# --- computer opponent -------------------------------------------------------------


def test_bot_invite_needs_a_seat_and_a_free_seat() -> None:
    connect("spectator")
    rejected("not_joined", lambda: services.bot_invite(code=ROOM, held=None))
    seated_room()
    rejected("room_full", lambda: services.bot_invite(code=ROOM, held="X"))


def test_bot_invite_takes_the_empty_seat_and_bumps_the_version() -> None:
    join(connect("c1"), "ana")
    assert services.bot_invite(code=ROOM, held="X", level="easy") == "O"
    assert version() == 2
    seat_o = state()["players"]["O"]
    assert seat_o is not None
    assert seat_o["online"] is True
    assert seat_o.get("bot") is True
    assert state()["status"] == "playing"


def test_bot_plays_only_at_the_given_version_and_only_once() -> None:
    join(connect("c1"), "ana")
    services.bot_invite(code=ROOM, held="X")
    # X's turn: nothing for the bot to do.
    before = row()
    assert services.bot_play(code=ROOM, version=2) is None
    assert row() == before
    after_x = services.move_play(code=ROOM, mark="X", cell=0, version=2)
    # A stale (or future) version is ignored.
    for stale in (2, after_x + 1):
        before = row()
        assert services.bot_play(code=ROOM, version=stale) is None
        assert row() == before
    assert services.bot_play(code=ROOM, version=after_x) == after_x + 1
    board = state()["board"]
    assert board.count("O") == 1
    # A second call for the same turn does nothing.
    before = row()
    assert services.bot_play(code=ROOM, version=after_x) is None
    assert row() == before
    assert state()["turn"] == "X"


def test_bot_agrees_to_a_rematch_at_once_and_opens_when_its_turn() -> None:
    join(connect("c1"), "ana")
    services.bot_invite(code=ROOM, held="X")
    # Play the perfect bot to the end.
    while state()["status"] == "playing":
        current = state()
        if current["turn"] == "X":
            services.move_play(code=ROOM, mark="X", cell=current["board"].index(None), version=None)
        else:
            assert services.bot_play(code=ROOM, version=current["version"]) is not None
    assert state()["winner"] != "X"  # the perfect bot never loses
    finished = version()
    assert services.rematch_request(code=ROOM, mark="X") is True
    assert version() == finished + 1
    assert state()["turn"] == "O"
    assert services.bot_play(code=ROOM, version=finished + 1) == finished + 2


def test_bot_play_without_a_bot_does_nothing() -> None:
    seated_room()
    before = row()
    assert services.bot_play(code=ROOM, version=2) is None
    assert row() == before


# --- presence, replicas ------------------------------------------------------------


def test_connection_open_creates_the_room_and_counts_spectators() -> None:
    assert room_state(ROOM) is None
    connect("s1")
    connect("s2")
    fresh = state()
    assert fresh["version"] == 0
    assert fresh["spectators"] == 2
    assert fresh["status"] == "waiting"
    assert presence.connection_close(channel_name="s1") is True
    assert presence.connection_close(channel_name="s1") is False
    assert state()["spectators"] == 1


def test_seat_is_online_while_any_connection_holds_it() -> None:
    x, _ = seated_room()
    join(connect("ana-tab-2"), "ana", token=x.token)
    players = state()["players"]
    assert players["X"] == {"name": "ana", "online": True}
    assert players["O"] == {"name": "bo", "online": True}
    presence.connection_close(channel_name="r1-ana")
    assert state()["players"]["X"] == {"name": "ana", "online": True}
    presence.connection_close(channel_name="ana-tab-2")
    assert state()["players"]["X"] == {"name": "ana", "online": False}
    assert state()["players"]["O"] == {"name": "bo", "online": True}
    # Presence is not a seat change.
    assert version() == 2


def test_sweep_drops_connections_of_a_replica_that_stopped_beating() -> None:
    x = join(connect("ana", replica="dead"), "ana")
    join(connect("bo", replica="alive"), "bo")
    connect("spectator", replica="dead")
    connect("elsewhere", code="r2", replica="alive")
    old = timezone.now() - timedelta(seconds=600)
    Replica.objects.filter(name="dead").update(heartbeat_at=old)
    # Already offline before the sweep: presence counts only live replicas.
    players = state()["players"]
    assert players["X"] == {"name": "ana", "online": False}
    assert players["O"] == {"name": "bo", "online": True}
    assert state()["spectators"] == 0
    before = row()
    assert presence.replicas_sweep(timeout_seconds=60) == [ROOM]
    assert not Replica.objects.filter(name="dead").exists()
    assert set(Connection.objects.values_list("channel_name", flat=True)) == {"bo", "elsewhere"}
    assert state()["players"]["X"] == {"name": "ana", "online": False}
    after = row()
    assert after.pop("x_away_since") is not None  # the seat's holder is away from now
    before.pop("x_away_since")
    assert after == before  # the seat stays, only presence changed
    assert presence.replicas_sweep(timeout_seconds=60) == []
    # The seat is still ana's to reclaim on a live replica.
    assert join(connect("ana-back", replica="alive"), "ana", token=x.token).mark == "X"
    assert state()["players"]["X"] == {"name": "ana", "online": True}


def test_replica_beat_keeps_a_replica_alive() -> None:
    connect("c1", replica="slow")
    Replica.objects.filter(name="slow").update(heartbeat_at=timezone.now() - timedelta(hours=1))
    presence.replica_beat(replica="slow")
    assert presence.replicas_sweep(timeout_seconds=60) == []
    assert Connection.objects.filter(channel_name="c1").exists()


def test_replica_retire_drops_its_connections_and_names_their_rooms() -> None:
    join(connect("ana", replica="leaving"), "ana")
    connect("s1", code="r2", replica="leaving")
    connect("s2", code="r2", replica="leaving")
    connect("s3", code="r3", replica="staying")
    assert sorted(presence.replica_retire(replica="leaving")) == [ROOM, "r2"]
    assert list(Connection.objects.values_list("channel_name", flat=True)) == ["s3"]
    assert state()["players"]["X"] == {"name": "ana", "online": False}
    assert presence.replica_retire(replica="leaving") == []


# --- the state message ---------------------------------------------------------------


def assert_state_shape(message: dict[str, Any]) -> None:
    """The `state` message exactly as docs/protocol.md writes it."""
    assert set(message) == STATE_KEYS
    assert message["type"] == "state"
    assert isinstance(message["room"], str)
    assert type(message["version"]) is int
    assert message["version"] >= 0
    board = message["board"]
    assert isinstance(board, list)
    assert len(board) == 9
    assert all(cell in ("X", "O", None) for cell in board)
    assert message["status"] in ("waiting", "playing", "won", "draw")
    if message["status"] == "playing":
        assert message["turn"] in ("X", "O")
    else:
        assert message["turn"] is None
    if message["status"] == "won":
        assert message["winner"] in ("X", "O")
        line = message["line"]
        assert isinstance(line, list)
        assert len(line) == 3
        assert all(type(i) is int and board[i] == message["winner"] for i in line)
    else:
        assert message["winner"] is None
        assert message["line"] is None
    players = message["players"]
    assert set(players) == {"X", "O"}
    for player in players.values():
        if player is not None:
            assert {"name", "online"} <= set(player) <= {"name", "online", "bot"}
            assert isinstance(player["name"], str)
            assert player["name"]
            assert type(player["online"]) is bool
    assert type(message["spectators"]) is int
    assert message["spectators"] >= 0
    rematch = message["rematch"]
    assert isinstance(rematch, list)
    assert all(mark in ("X", "O") for mark in rematch)
    assert len(set(rematch)) == len(rematch)
    assert json.loads(json.dumps(message)) == message


def test_room_state_of_an_unknown_room_is_none() -> None:
    assert room_state("nobody-here") is None


def test_room_state_has_the_protocol_shape_through_a_whole_game() -> None:
    connect("spectator")
    seen = [state()]
    assert seen[0]["players"] == {"X": None, "O": None}
    assert (seen[0]["status"], seen[0]["turn"]) == ("waiting", None)
    join(connect("ana"), "ana")
    seen.append(state())
    assert seen[-1]["players"] == {"X": {"name": "ana", "online": True}, "O": None}
    assert (seen[-1]["status"], seen[-1]["turn"]) == ("waiting", None)
    join(connect("bo"), "bo")
    seen.append(state())
    assert (seen[-1]["status"], seen[-1]["turn"]) == ("playing", "X")
    for mark, cell in X_WINS:
        services.move_play(code=ROOM, mark=mark, cell=cell, version=None)
        seen.append(state())
    services.rematch_request(code=ROOM, mark="O")
    seen.append(state())
    for message in seen:
        assert_state_shape(message)
    assert [message["version"] for message in seen] == [0, 1, 2, 3, 4, 5, 6, 7, 7]
    final = dict(seen[-1])
    assert final.pop("presence_at") >= seen[0]["presence_at"]
    assert final == {
        "type": "state",
        "room": ROOM,
        "version": 7,
        "board": ["X", "X", "X", "O", "O", None, None, None, None],
        "turn": None,
        "status": "won",
        "winner": "X",
        "line": [0, 1, 2],
        "players": {"X": {"name": "ana", "online": True}, "O": {"name": "bo", "online": True}},
        "spectators": 1,
        "rematch": ["O"],
    }
    assert seen[3]["board"][0] == "X"
    assert seen[3]["turn"] == "O"


def test_room_state_of_a_bot_seat_keeps_the_protocol_shape() -> None:
    join(connect("ana"), "ana")
    services.bot_invite(code=ROOM, held="X")
    message = state()
    assert_state_shape(message)
    assert message["players"]["O"] == {"name": services.BOT_NAME, "online": True, "bot": True}
