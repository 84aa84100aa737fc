"""A change committed whose broadcast never left (a worker SIGKILLed between saving the
computer's move and publishing it, a replica dying the same way) still reaches every
member within 2 s: each replica compares the versions of the rooms it serves with the
database every ROOM_CATCH_UP_SECONDS and re-sends what it is behind on.

The lost broadcast is made exactly: another process commits a move through the ORM
services (which never broadcast) and exits. A real replica on PostgreSQL and the
RabbitMQ layer, and a real WebSocket client."""

from __future__ import annotations

import pytest

from gameclient import codec
from tests.support.connections import OpenClient
from tests.support.server import UvicornServer, move_unannounced
from tests.support.timing import budget

pytestmark = [pytest.mark.e2e, pytest.mark.fleet]

# The promise: no room goes without its move for more than 2 s.
SEEN_WITHIN = budget(2.0)


@pytest.fixture
def server_env(database_url: str, rabbitmq_url: str) -> dict[str, str]:
    """The replica (tests/conftest.py's `replica`) on PostgreSQL and the RabbitMQ layer."""
    return {"DATABASE_URL": database_url, "RABBITMQ_URL": rabbitmq_url}


async def test_a_move_committed_but_never_broadcast_reaches_every_member(
    replica: UvicornServer, clients: OpenClient
) -> None:
    server = replica
    room = "lost-broadcast"
    url = f"{server.ws_url}/ws/game/{room}"
    ana, bo = await clients(url, "ana"), await clients(url, "bo")
    watcher = await clients(url, "watcher")
    for player, name in ((ana, "ana"), (bo, "bo")):
        await player.next("welcome")
        await player.send(codec.join(name))
        await player.next("joined")
    for member in (ana, bo, watcher):
        await member.at_version(2)

    move_unannounced(server, room, "X", 4)
    for member in (ana, bo, watcher):
        state = await member.at_version(3, within=SEEN_WITHIN)
        assert state["board"][4] == "X"
    # The room plays on from there.
    await bo.send(codec.move(0))
    assert (await ana.at_version(4))["board"][0] == "O"
