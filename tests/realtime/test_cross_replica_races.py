"""Races between two real replicas on one PostgreSQL database and one RabbitMQ vhost.

Two `python -m deploy.server` processes (tests/support/server.py) serve the same rooms;
in every room a socket on each replica sends its message at the same moment:

- two `join`s for the same empty seat: exactly one gets `joined` for it, the other the
  next empty seat, or `room_full` when there is none (docs/protocol.md, `join`);
- two `move`s for the same turn, from two sockets holding the same seat (two tabs of one
  player, one per replica): exactly one lands, the other gets `not_your_turn`,
  `cell_taken` or `stale_version` (docs/protocol.md, "Concurrency").

Afterwards every member of the room, on either replica, converges on the same state,
and both replicas' `/api/rooms/<code>` give it too. Each race runs in ROOMS rooms to give
it its chances. A socket handles its messages in order, so a `ping` sent after the race
message is answered after its reply: the `pong` marks where a reply would have been.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devtools.databases import throwaway_database
from gameclient import codec
from gameclient.codec import Frame
from gameclient.connection import Connection
from tests.support.http import get_json
from tests.support.server import UvicornServer
from tests.support.timing import budget

pytestmark = [pytest.mark.e2e, pytest.mark.fleet]

ROOMS = 20
# An upper bound for any awaited frame: a guard against a hang, not a limit.
WITHIN = budget(30.0)
MOVE_RACE_ERRORS = {"not_your_turn", "cell_taken", "stale_version"}
_pings = itertools.count(1)


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with throwaway_database() as url:
        yield url


@pytest.fixture(scope="module")
def replicas(
    database_url: str, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[UvicornServer, UvicornServer]]:
    """web-a and web-b: one database, one vhost (the module's own)."""
    log_dir = tmp_path_factory.mktemp("replicas")
    env = {"DATABASE_URL": database_url, "RABBITMQ_URL": rabbitmq_url}
    a = UvicornServer(env=env, name="web-a", log_dir=log_dir)
    b = UvicornServer(env=env, name="web-b", log_dir=log_dir)
    a.migrate()
    try:
        a.start(timeout=budget(60))
        b.start(timeout=budget(60))
        yield a, b
    finally:
        b.stop()
        a.stop()
        for server in (a, b):
            print(f"--- {server.name} ({server.log_path}):\n{_tail(server.log_path)}")


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


@dataclass
class Room:
    code: str
    replicas: tuple[UvicornServer, UvicornServer]
    stack: AsyncExitStack
    members: list[Connection]

    async def open(self, on: int, label: str) -> Connection:
        """A socket on replica `on` (0: web-a, 1: web-b), closed at the end of the test."""
        url = f"{self.replicas[on].ws_url}/ws/game/{self.code}"
        conn = await Connection.open(
            url, f"{self.code}/{label}@{self.replicas[on].name}", wait=WITHIN
        )
        self.stack.push_async_callback(conn.close)
        welcome = await conn.next("welcome", WITHIN)
        assert welcome["server"] == self.replicas[on].name
        await conn.at_version(0, WITHIN)
        self.members.append(conn)
        return conn

    async def converged(self, version: int) -> Frame:
        """Every member's latest state at `version`, the same game on all of them, and
        both replicas' API saying so: that game (its state as the first member has it)."""
        latest = [await member.at_version(version, WITHIN) for member in self.members]
        games = {_game(state) for state in latest}
        assert len(games) == 1, f"{self.code}: members disagree: {games}"
        for replica in self.replicas:
            status, body = await asyncio.to_thread(get_json, f"{replica.url}/api/rooms/{self.code}")
            assert status == 200, (replica.name, body)
            assert _game(body) == _game(latest[0]), (replica.name, body, latest[0])
        assert latest[0]["version"] == version, f"{self.code}: {latest[0]}"
        return latest[0]


@pytest.fixture
async def rooms(
    replicas: tuple[UvicornServer, UvicornServer],
) -> AsyncIterator[Any]:
    """new_room(i) -> a Room with a spectator on each replica; every socket closed after."""
    async with AsyncExitStack() as stack:
        prefix = f"race-{secrets.token_hex(3)}"

        async def new_room(i: int) -> Room:
            room = Room(f"{prefix}-{i}", replicas, stack, [])
            await room.open(0, "spectator")
            await room.open(1, "spectator")
            return room

        yield new_room


# --- helpers --------------------------------------------------------------------------


def _game(state: Frame) -> tuple[Any, ...]:
    """What every member must agree on (presence may still be on its way)."""
    players = state["players"]
    names = tuple(None if players[m] is None else players[m]["name"] for m in ("X", "O"))
    return (state["version"], tuple(state["board"]), state["turn"], state["status"], names)


async def send_together(*sends: tuple[Connection, dict[str, Any]]) -> list[list[Frame]]:
    """Send every message at once (one per socket); each socket's replies to it:
    `joined` and `error` frames up to the `pong` that follows it."""
    starts = [len(conn.messages) for conn, _ in sends]
    await asyncio.gather(*(conn.send(message) for conn, message in sends))
    return list(
        await asyncio.gather(
            *(
                replies_until_pong(conn, start)
                for (conn, _), start in zip(sends, starts, strict=True)
            )
        )
    )


async def replies_until_pong(conn: Connection, start: int) -> list[Frame]:
    t = next(_pings)
    await conn.send(codec.ping(t))

    def pong_at() -> int | None:
        for index in range(start, len(conn.messages)):
            message = conn.messages[index]
            if codec.kind(message) == "pong" and message.get("t") == t:
                return index
        return None

    end = await conn.wait_for(pong_at, f"pong {t}", WITHIN)
    return [m for m in conn.messages[start:end] if codec.kind(m) in ("joined", "error")]


def one_reply(replies: list[Frame], who: str) -> Frame:
    assert len(replies) == 1, f"{who}: expected one reply, got {replies}"
    return replies[0]


# --- the races ------------------------------------------------------------------------


async def test_two_replicas_racing_for_one_seat_give_it_to_exactly_one(rooms: Any) -> None:
    """Even rooms: both seats empty, the two joins race for X (the loser gets O).
    Odd rooms: X already taken, they race for O (the loser gets `room_full`)."""
    outcomes: Counter[str] = Counter()
    for i in range(ROOMS):
        room: Room = await rooms(i)
        version = 0
        if i % 2:
            holder = await room.open(0, "holder")
            await holder.send(codec.join("hal"))
            assert (await holder.next("joined", WITHIN))["mark"] == "X"
            version = 1
            await room.converged(version)
        on_a = await room.open(0, "ana")
        on_b = await room.open(1, "bo")
        ana, bo = await send_together((on_a, codec.join("ana")), (on_b, codec.join("bo")))
        got = {"ana": one_reply(ana, "ana"), "bo": one_reply(bo, "bo")}
        joined = {name: r["mark"] for name, r in got.items() if r["type"] == "joined"}
        refused = {name: r["code"] for name, r in got.items() if r["type"] == "error"}
        if i % 2:
            assert list(joined.values()) == ["O"], (room.code, got)
            assert list(refused.values()) == ["room_full"], (room.code, got)
            seats = {"X": "hal", "O": next(iter(joined))}
        else:
            assert sorted(joined.values()) == ["O", "X"], (room.code, got)
            assert not refused, (room.code, got)
            seats = {mark: name for name, mark in joined.items()}
        state = await room.converged(2)  # X and O seated, one version each
        assert state["status"] == "playing"
        assert {m: state["players"][m]["name"] for m in ("X", "O")} == seats
        contested = "O" if i % 2 else "X"
        outcomes[f"{contested} to {'web-a' if seats[contested] == 'ana' else 'web-b'}"] += 1
    print(f"race-metric seat_race {dict(outcomes)}")


async def test_two_replicas_racing_one_turn_accept_exactly_one_move(rooms: Any) -> None:
    """The X player has a tab on each replica; both tabs move for X's first turn at once:
    the same cell (i % 3 == 0), the same cell with the version (1), two cells (2)."""
    outcomes: Counter[str] = Counter()
    for i in range(ROOMS):
        room: Room = await rooms(i)
        tab_a = await room.open(0, "ana-tab-a")
        await tab_a.send(codec.join("ana"))
        joined = await tab_a.next("joined", WITHIN)
        assert joined["mark"] == "X"
        bo = await room.open(i % 2, "bo")
        await bo.send(codec.join("bo"))
        assert (await bo.next("joined", WITHIN))["mark"] == "O"
        tab_b = await room.open(1, "ana-tab-b")
        await tab_b.send(codec.join("ana", joined["token"]))
        assert (await tab_b.next("joined", WITHIN))["mark"] == "X"  # the seat reclaimed
        before = await room.converged(2)
        assert before["turn"] == "X"

        cells = (4, 4) if i % 3 < 2 else (0, 8)
        version = 2 if i % 3 == 1 else None
        moves = [codec.move(cell, version) for cell in cells]
        replies = await send_together((tab_a, moves[0]), (tab_b, moves[1]))
        errors = [[r for r in rs if r["type"] == "error"] for rs in replies]
        assert all(r["type"] == "error" for rs in replies for r in rs), replies
        landed = [k for k, errs in enumerate(errors) if not errs]
        assert len(landed) == 1, f"{room.code}: {len(landed)} moves landed: {replies}"
        loser = errors[1 - landed[0]]
        assert len(loser) == 1, (room.code, loser)
        assert loser[0]["code"] in MOVE_RACE_ERRORS, (room.code, loser)
        outcomes[f"{room.replicas[landed[0]].name} won, {loser[0]['code']}"] += 1

        after = await room.converged(3)
        board: list[str | None] = [None] * 9
        board[cells[landed[0]]] = "X"
        assert after["board"] == board, (room.code, after)
        assert after["turn"] == "O"
    print(f"race-metric move_race {dict(outcomes)}")
