"""Seats come free on the wire (docs/protocol.md, "Seats and rooms over time"): `leave`,
the `left` frame, forfeits, every socket of the seat turned spectator, quick match giving
up. Through the full ASGI stack (`config.asgi.application`); every server frame checked
against docs/asyncapi.yaml by tests/support/ws.py. Runs on SQLite, on PostgreSQL
(DATABASE_URL) and with the RabbitMQ channel layer (RABBITMQ_URL, a real worker counting
results); waits are for frames and rows, never for a fixed time.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from channels.db import database_sync_to_async

from game.models import GameResult, LeaderboardEntry, MatchTicket
from gameclient import codec
from gameclient.codec import Frame
from tests.support.timing import budget
from tests.support.ws import Client, Sockets

pytestmark = [
    pytest.mark.both_databases,
    pytest.mark.rabbitmq_layer,
    pytest.mark.django_db(transaction=True, available_apps=["game", "django.contrib.auth"]),
]

ROOM = "lifecycle"
COUNTED_WITHIN = budget(10.0)  # the `game.finished` job: in process, or a worker's


async def seated(ws: Sockets) -> tuple[Client, Client]:
    x = await ws.open(ROOM)
    await x.join("ana")
    o = await ws.open(ROOM)
    await o.join("bo")
    await x.state_at(2)
    await o.state_at(2)
    return x, o


async def left(client: Client) -> Frame:
    return await client.recv_type("left")


@database_sync_to_async
def results() -> list[tuple[str, str, str]]:
    return list(GameResult.objects.order_by("key").values_list("x_name", "o_name", "winner"))


@database_sync_to_async
def board_of(name: str) -> tuple[int, int, int] | None:
    entry = LeaderboardEntry.objects.filter(name=name).first()
    return None if entry is None else (entry.wins, entry.losses, entry.draws)


async def counted(name: str) -> tuple[int, int, int]:
    """`name`'s leaderboard row once the result job has counted it."""
    deadline = asyncio.get_running_loop().time() + COUNTED_WITHIN
    while (row := cast(tuple[int, int, int] | None, await board_of(name))) is None:
        assert asyncio.get_running_loop().time() < deadline, f"{name} never counted"
        await asyncio.sleep(0.05)
    return row


async def test_leave_frees_the_seat_tells_the_room_and_the_leaver_watches_on(ws: Sockets) -> None:
    x, o = await seated(ws)
    spectator = await ws.open(ROOM)
    await x.send(codec.leave())
    expected = {"type": "left", "mark": "X", "name": "ana", "reason": "leave", "forfeit": False}
    for member in (x, o, spectator):
        assert await left(member) == expected
        state = await member.state_at(3)
        assert state["players"]["X"] is None
        assert state["players"]["O"] == {"name": "bo", "online": True}
        assert state["status"] == "waiting"
    # No game had started: nothing to count.
    assert await results() == []
    # The leaver is a spectator now: counted as one, and refused as a player.
    await x.state_where(lambda s: s["spectators"] == 2 and s["players"]["X"] is None)
    await x.send(codec.move(4))
    assert await x.error() == "not_joined"
    await x.send(codec.leave())
    assert await x.error() == "not_joined"
    # The seat is anyone's again, the leaver's included.
    newcomer = await ws.open(ROOM)
    assert (await newcomer.join("cy"))["mark"] == "X"
    assert (await o.state_at(4))["players"]["X"] == {"name": "cy", "online": True}


async def test_leaving_a_running_game_forfeits_it_and_the_opponent_wins(ws: Sockets) -> None:
    x, o = await seated(ws)
    await x.send(codec.move(4))
    await o.state_at(3)
    await o.send(codec.leave())
    expected = {"type": "left", "mark": "O", "name": "bo", "reason": "leave", "forfeit": True}
    assert await left(x) == expected
    state = await x.state_at(4)
    # The forfeited game is over; the board waits, cleared, for the next opponent.
    assert state["board"] == [None] * 9
    assert state["players"]["O"] is None
    assert state["status"] == "waiting"
    assert await results() == [("ana", "bo", "X")]
    assert await counted("ana") == (1, 0, 0)
    assert await counted("bo") == (0, 1, 0)


async def test_every_socket_holding_the_seat_loses_it_and_its_token(ws: Sockets) -> None:
    x, o = await seated(ws)
    second_tab = await ws.open(ROOM)
    await second_tab.join("ana", token=x.token)
    assert second_tab.mark == "X"
    await x.send(codec.leave())
    assert (await left(second_tab))["mark"] == "X"
    await second_tab.state_at(3)
    await second_tab.send(codec.move(0))
    assert await second_tab.error() == "not_joined"
    # The token opened a seat that was given up: it opens nothing now.
    await second_tab.send(codec.join("ana", x.token))
    assert await second_tab.error() == "bad_token"
    both_watch = await o.state_where(lambda s: s["spectators"] == 2)
    assert both_watch["players"]["X"] is None


async def test_leaving_the_computer_frees_both_seats(ws: Sockets, settings: Any) -> None:
    settings.BOT_THINK_SECONDS = 0
    x = await ws.open(ROOM)
    await x.join("ana")
    await x.send(codec.bot())
    await x.state_where(lambda s: (s["players"]["O"] or {}).get("bot") is True)
    await x.send(codec.move(0))
    mine = await x.state_where(lambda s: s["board"].count(None) == 7)  # the computer answered
    await x.send(codec.leave())
    assert (await left(x))["forfeit"] is True
    state = await x.state_at(mine["version"] + 1)
    assert state["players"] == {"X": None, "O": None}
    assert await results() == [("ana", "Computer", "O")]
    assert await counted("ana") == (0, 1, 0)
    assert await board_of("Computer") is None


async def test_leave_without_a_seat_gets_not_joined(ws: Sockets) -> None:
    spectator = await ws.open(ROOM)
    await spectator.send(codec.leave())
    assert await spectator.error() == "not_joined"
    await spectator.send(codec.ping("alive"))
    assert await spectator.recv_type("pong") == {"type": "pong", "t": "alive"}


async def test_quick_match_gives_up_after_its_timeout(ws: Sockets, settings: Any) -> None:
    settings.QUICKMATCH_TIMEOUT_SECONDS = 0.2
    alone = await ws.open("lobby")
    await alone.send(codec.quickmatch("ana"))
    ticket = (await alone.recv_type("matching"))["ticket"]
    assert await alone.recv_type("unmatched", within=budget(5.0)) == {
        "type": "unmatched",
        "ticket": ticket,
        "reason": "timeout",
    }
    assert not await database_sync_to_async(MatchTicket.objects.filter(id=ticket).exists)()
    # Out of line, still connected: asking again gets a new place.
    await alone.send(codec.quickmatch("ana"))
    assert (await alone.recv_type("matching"))["ticket"] > ticket
