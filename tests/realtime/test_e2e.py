"""End to end: a real uvicorn process and real `websockets` clients.

Each test gets its own replica (the `replica` fixture: a free port, its own
SQLite file, stopped at the end) and closes every client it opens.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as sync_connect

from gameclient.codec import Frame
from gameclient.connection import Connection
from tests.support.connections import OpenClient, opened_clients
from tests.support.http import get_json
from tests.support.server import UvicornServer
from tests.support.timing import budget

pytestmark = pytest.mark.e2e

MAX_FRAME_BYTES: int = settings.MAX_FRAME_BYTES  # the replica under test runs the default
X_WINS = [("X", 0), ("O", 3), ("X", 1), ("O", 4), ("X", 2)]
# O opens the second game; no line is ever complete, so it ends in a draw.
O_DRAWS = [("O", 0), ("X", 1), ("O", 2), ("X", 4), ("O", 3), ("X", 5), ("O", 7), ("X", 6), ("O", 8)]


# docs/protocol.md: "When a connection closes, the room gets a `state` showing it within
# one second", and every member converges on the room's newest state within one second
# of a change. The limits that check these promises, scaled (TEST_TIME_SCALE).
PROMISED_WITHIN = budget(1.0)


@pytest.fixture
async def clients() -> AsyncIterator[OpenClient]:
    """open(url, label) -> Connection; every client is closed when the test ends."""
    async with opened_clients() as open_client:
        yield open_client


def room_url(replica: UvicornServer, code: str) -> str:
    return f"{replica.ws_url}/ws/game/{code}"


async def api_state(replica: UvicornServer, code: str) -> tuple[int, Any]:
    return await asyncio.to_thread(get_json, f"{replica.url}/api/rooms/{code}")


async def seat(client: Connection, name: str) -> Frame:
    await client.send({"type": "join", "name": name})
    return await client.next("joined")


def counted(state: Frame | None) -> Frame | None:
    """A state without `presence_at`: the API counts presence again when asked, so its
    count is later than the last broadcast's even when every number agrees."""
    return None if state is None else {k: v for k, v in state.items() if k != "presence_at"}


async def test_full_game_to_a_win_then_a_draw_seen_in_order_by_a_spectator(
    replica: UvicornServer, clients: Callable[..., Any]
) -> None:
    code = "e2e-full-game"
    url = room_url(replica, code)
    spectator: Connection = await clients(url, "spectator")
    welcome = await spectator.next("welcome")
    assert welcome == {"type": "welcome", "room": code, "server": "web-1", "protocol": 1}
    first = await spectator.at_version(0)
    assert (first["status"], first["players"]) == ("waiting", {"X": None, "O": None})

    ana: Connection = await clients(url, "ana")
    bo: Connection = await clients(url, "bo")
    everyone = (spectator, ana, bo)
    joined_x = await seat(ana, "ana")
    assert joined_x["mark"] == "X"
    assert isinstance(joined_x["token"], str)
    assert joined_x["token"]
    await spectator.at_version(1)
    joined_o = await seat(bo, "bo")
    assert joined_o["mark"] == "O"
    assert joined_o["token"] != joined_x["token"]
    version = 2
    for client in everyone:
        state = await client.at_version(version)
        assert (state["status"], state["turn"]) == ("playing", "X")

    async def play(moves: list[tuple[str, int]]) -> Frame:
        nonlocal version
        for mark, cell in moves:
            mover = ana if mark == "X" else bo
            await mover.send({"type": "move", "cell": cell, "version": version})
            version += 1
            for client in everyone:
                state = await client.at_version(version)
                assert state["board"][cell] == mark
        return await spectator.at_version(version)

    won = await play(X_WINS)
    assert (won["status"], won["winner"], won["line"], won["turn"]) == ("won", "X", [0, 1, 2], None)

    # A request alone is recorded without a version change; both start game two.
    await ana.send({"type": "rematch"})
    asked = await spectator.state_where(lambda s: s["rematch"] == ["X"], "rematch [X]")
    assert asked["version"] == version
    await bo.send({"type": "rematch"})
    version += 1
    for client in everyone:
        fresh = await client.at_version(version)
        assert fresh["board"] == [None] * 9
        assert (fresh["status"], fresh["turn"], fresh["rematch"]) == ("playing", "O", [])

    drawn = await play(O_DRAWS)
    assert (drawn["status"], drawn["winner"], drawn["line"], drawn["turn"]) == (
        "draw",
        None,
        None,
        None,
    )
    assert version == 2 + len(X_WINS) + 1 + len(O_DRAWS)

    # The spectator saw every version from the first seat change on, in order.
    seen = [state["version"] for state in spectator.states]
    assert seen == sorted(seen), f"states out of version order: {seen}"
    assert set(range(1, version + 1)) <= set(seen), f"missing versions: {seen}"

    # Everyone, and the HTTP API, converge on the same final state (within the promised
    # second: the last change is a move, its presence follows within the same second).
    async def converged() -> bool:
        status, from_api = await api_state(replica, code)
        assert status == 200
        return all(counted(client.latest) == counted(from_api) for client in everyone)

    deadline = time.monotonic() + PROMISED_WITHIN
    while not await converged():
        if time.monotonic() > deadline:
            break  # the assertions below say what differs
        await asyncio.sleep(0.05)  # polling the HTTP API: it pushes nothing
    _, from_api = await api_state(replica, code)
    assert counted(spectator.latest) == counted(from_api)
    assert counted(ana.latest) == counted(from_api)
    assert counted(bo.latest) == counted(from_api)
    assert from_api["version"] == version
    assert from_api["players"] == {
        "X": {"name": "ana", "online": True},
        "O": {"name": "bo", "online": True},
    }
    assert from_api["spectators"] == 1


async def test_frame_larger_than_max_frame_bytes_closes_with_1009(
    replica: UvicornServer, clients: Callable[..., Any]
) -> None:
    client: Connection = await clients(room_url(replica, "e2e-big"), "big")
    await client.next("welcome")
    envelope = len(json.dumps({"data": ""}, separators=(",", ":")))
    # Exactly the limit is fine: the relay echoes it.
    at_limit = json.dumps({"data": "x" * (MAX_FRAME_BYTES - envelope)}, separators=(",", ":"))
    assert len(at_limit.encode()) == MAX_FRAME_BYTES
    await client.ws.send(at_limit)
    echoed = await client.wait_for(
        lambda: next((m for m in client.messages if "payload" in m), None), "relay echo"
    )
    assert echoed["payload"] == "x" * (MAX_FRAME_BYTES - envelope)
    # One byte more closes the connection with 1009.
    await client.ws.send(at_limit[:-2] + 'x"}')
    assert await client.close_code() == 1009


async def test_frame_too_large_in_multibyte_characters_closes_with_1009(
    replica: UvicornServer, clients: Callable[..., Any]
) -> None:
    client: Connection = await clients(room_url(replica, "e2e-big-utf8"), "big")
    await client.next("welcome")
    # 6000 characters, 18000 bytes of UTF-8.
    await client.send({"type": "chat", "text": "\u20ac" * 6000})
    assert await client.close_code() == 1009


BAD_PATHS = [
    "/ws/game/bad.code",
    "/ws/game/" + "a" * 33,
    "/ws/game/",
    "/ws/game/sp%20ace",
    "/ws/game/a/b",
    "/ws/elsewhere",
]


async def test_bad_room_code_is_refused_in_the_handshake(replica: UvicornServer) -> None:
    statuses = {}
    for path in BAD_PATHS:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(replica.ws_url + path, open_timeout=budget(5)):
                pass
        statuses[path] = refused.value.response.status_code
    assert set(statuses.values()) <= {403, 404}, statuses


async def test_longest_valid_room_code_is_accepted(
    replica: UvicornServer, clients: Callable[..., Any]
) -> None:
    code = "A-z_9" * 6 + "xy"
    assert len(code) == 32
    client: Connection = await clients(room_url(replica, code), "edge")
    assert (await client.next("welcome"))["room"] == code
    assert (await api_state(replica, code))[0] == 200


async def test_unknown_room_is_404_over_http(replica: UvicornServer) -> None:
    status, body = await api_state(replica, "never-visited")
    assert status == 404
    assert body["error"] == "not_found"


async def test_flood_of_more_than_100_messages_in_a_second_closes_with_1008(
    replica: UvicornServer, clients: Callable[..., Any]
) -> None:
    url = room_url(replica, "e2e-flood")
    flooder: Connection = await clients(url, "flooder")
    bystander: Connection = await clients(url, "bystander")
    await flooder.next("welcome")
    for t in range(150):
        if flooder.closed:
            break
        await flooder.send({"type": "ping", "t": t})
    assert await flooder.close_code() == 1008
    pongs = [m for m in flooder.messages if m.get("type") == "pong"]
    limited = [m for m in flooder.messages if m.get("code") == "rate_limited"]
    assert pongs
    assert pongs[0]["t"] == 0
    assert 1 <= len(pongs) <= 100
    assert limited, "no rate_limited error before the close"
    # The room still serves everybody else.
    await bystander.send({"type": "ping", "t": "still here"})
    assert (await bystander.next("pong"))["t"] == "still here"


async def test_closed_player_socket_shows_offline_to_the_others_within_a_second(
    replica: UvicornServer, clients: Callable[..., Any]
) -> None:
    url = room_url(replica, "e2e-presence")
    spectator: Connection = await clients(url, "spectator")
    ana: Connection = await clients(url, "ana")
    bo: Connection = await clients(url, "bo")
    token = (await seat(ana, "ana"))["token"]
    await seat(bo, "bo")
    online = await spectator.at_version(2)
    await spectator.state_where(
        lambda s: s["players"]["X"]["online"] and s["players"]["O"]["online"], "both online"
    )
    version = online["version"]

    def x_online(value: bool) -> Callable[[Frame], bool]:
        return lambda s: s["players"]["X"] is not None and s["players"]["X"]["online"] is value

    # The promise under test: the close shows to everyone within one second (scaled).
    loop = asyncio.get_running_loop()
    started = loop.time()
    await ana.close()
    for other in (bo, spectator):
        state = await other.state_where(x_online(False), "X offline", within=PROMISED_WITHIN)
        assert state["version"] == version  # presence is not a seat change
        assert state["players"]["O"] == {"name": "bo", "online": True}
    assert loop.time() - started < PROMISED_WITHIN

    # Reconnecting with the token brings the seat back online (a seat change: the same
    # second).
    again: Connection = await clients(url, "ana-again")
    await again.send({"type": "join", "name": "ana", "token": token})
    assert (await again.next("joined"))["mark"] == "X"
    await spectator.state_where(x_online(True), "X online again", within=PROMISED_WITHIN)
    status, from_api = await api_state(replica, "e2e-presence")
    assert status == 200
    assert from_api["players"]["X"] == {"name": "ana", "online": True}


@pytest.mark.parametrize("restarted_as", ["web-2", "web-1"])
def test_killed_replica_leaves_no_seat_online_even_when_restarted_under_its_name(
    tmp_path: Path, restarted_as: str
) -> None:
    """docs/protocol.md: a seat is online only while an open connection holds it; a dead
    replica's connections stop counting within the presence timeout. Restarting a
    replica under the same REPLICA_NAME (a container restart in the same pod, the
    fleet's `restart()`) must not bring its dead connections back to life."""
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
        "PRESENCE_HEARTBEAT_SECONDS": "0.2",
        "PRESENCE_TIMEOUT_SECONDS": "1",
    }
    code = "e2e-ghost"
    first = UvicornServer(env=env, name="web-1", log_dir=tmp_path)
    first.migrate()
    second = UvicornServer(env=env, name=restarted_as, log_dir=tmp_path)
    try:
        first.start(timeout=budget(20))
        with sync_connect(f"{first.ws_url}/ws/game/{code}", open_timeout=budget(5)) as ana:
            ana.send(json.dumps({"type": "join", "name": "ana"}))
            while json.loads(ana.recv(budget(5))).get("type") != "joined":
                pass
            first.kill()
        second.start(timeout=budget(20))
        # The presence timeout (1 s) and a heartbeat (0.2 s), with room to spare: scaled.
        deadline = time.monotonic() + budget(4.0)
        while True:
            status, state = get_json(f"{second.url}/api/rooms/{code}")
            assert status == 200
            if state["players"]["X"]["online"] is False or time.monotonic() > deadline:
                break
            time.sleep(0.1)  # polling the HTTP API: it pushes nothing
        assert state["players"]["X"] == {"name": "ana", "online": False}, (
            f"ana's socket died with web-1, but after the restart as {restarted_as} "
            f"the API still says {state['players']['X']}"
        )
    finally:
        first.stop()
        second.stop()
