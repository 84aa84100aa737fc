"""Limits that protect the fleet, not only one socket (realtime/limits.py): sockets per
client address, a cool-down after a flood, members per room, the fan-out budget per room.
Each refusal is the documented close (1013 with its reason) or error (`room_busy`), and
is counted in /metrics."""

from __future__ import annotations

from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from prometheus_client import REGISTRY

from config.asgi import application
from realtime import limits
from tests.support.ws import Client, Sockets

pytestmark = [pytest.mark.both_databases, pytest.mark.django_db(transaction=True)]


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("tictac_ws_refused_total", {"reason": reason}) or 0.0


async def open_from(ws: Sockets, address: str, room: str) -> Client:
    """A socket whose peer (the ASGI scope's client) is `address`."""
    path = f"/ws/game/{room}"
    communicator = WebsocketCommunicator(application, path)
    communicator.scope["client"] = [address, 40000 + len(ws.clients)]
    client = Client(communicator, path)
    ws.clients.append(client)
    connected, _ = await communicator.connect()
    assert connected
    return client


async def greeted(client: Client) -> bool:
    """True if the socket got its welcome; False if the server closed it first."""
    first = await client.output()
    return first["type"] == "websocket.send" and '"welcome"' in first["text"]


async def close_of(client: Client) -> dict[str, Any]:
    message = await client.output()
    assert message["type"] == "websocket.close", message
    return message


async def test_sockets_per_address_are_capped_and_come_free_again(
    ws: Sockets, settings: Any
) -> None:
    settings.MAX_SOCKETS_PER_ADDRESS = 2
    before = refused("too_many_sockets")
    first = await open_from(ws, "10.0.0.1", "cap-a")
    assert await greeted(first)
    assert await greeted(await open_from(ws, "10.0.0.1", "cap-b"))
    third = await open_from(ws, "10.0.0.1", "cap-a")
    assert await close_of(third) == {
        "type": "websocket.close",
        "code": 1013,
        "reason": "too_many_sockets",
    }
    assert refused("too_many_sockets") == before + 1
    assert await greeted(await open_from(ws, "10.0.0.2", "cap-a"))  # another client
    await first.close()
    assert await greeted(await open_from(ws, "10.0.0.1", "cap-a"))  # a place came free


async def test_an_address_closed_for_flooding_cools_down(ws: Sockets, settings: Any) -> None:
    settings.RATE_LIMIT_PER_SECOND = 2
    settings.RATE_LIMIT_CLOSE_PER_SECOND = 4
    settings.FLOOD_COOLDOWN_SECONDS = 600
    flooder = await open_from(ws, "10.0.1.1", "flood")
    assert await greeted(flooder)
    for n in range(10):
        await flooder.send({"type": "ping", "t": n})
    assert await flooder.close_code_received(within=5) == 1008
    again = await open_from(ws, "10.0.1.1", "elsewhere")
    assert (await close_of(again))["reason"] == "cooling_down"
    assert await greeted(await open_from(ws, "10.0.1.2", "elsewhere"))  # only that address


async def test_a_room_holds_at_most_max_room_members(ws: Sockets, settings: Any) -> None:
    settings.MAX_ROOM_MEMBERS = 3
    members = [await ws.open("crowded") for _ in range(3)]
    fourth = await open_from(ws, "10.0.2.1", "crowded")
    assert await close_of(fourth) == {
        "type": "websocket.close",
        "code": 1013,
        "reason": "room_members",
    }
    await members[0].close()
    # The refused socket left no trace: with one member gone, one more fits.
    assert await greeted(await open_from(ws, "10.0.2.1", "crowded"))


async def test_the_fan_out_budget_is_the_rooms_whoever_sends(
    ws: Sockets, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.ROOM_FANOUT_PER_SECOND = 10
    monkeypatch.setattr(limits.budgets, "clock", lambda: 1000.0)  # no refill meanwhile
    alice, bob, *_ = [await ws.open("busy") for _ in range(5)]
    quiet = await ws.open("quiet")
    await alice.send({"data": 1})  # 5 members: 5 deliveries of 10
    await alice.recv_until(lambda frame: frame.get("payload") == 1)
    await bob.send({"data": 2})  # another sender, the same budget: 10 of 10
    await bob.recv_until(lambda frame: frame.get("payload") == 2)
    await bob.send({"data": 3})
    assert await bob.error() == "room_busy"
    await alice.send({"data": 4})
    assert await alice.error() == "room_busy"
    await quiet.send({"data": 5})  # another room has its own budget
    await quiet.recv_until(lambda frame: frame.get("payload") == 5)


def test_a_cool_down_ends_and_the_budget_refills(settings: Any) -> None:
    settings.FLOOD_COOLDOWN_SECONDS = 30
    settings.MAX_SOCKETS_PER_ADDRESS = 5
    settings.ROOM_FANOUT_PER_SECOND = 100
    book = limits.Addresses()
    book.cool_down("10.9.9.9", now=0.0)
    assert book.admit("10.9.9.9", now=29.9) == "cooling_down"
    assert book.admit("10.9.9.9", now=30.0) is None
    budgets = limits.RoomBudgets()
    assert budgets.spend("r", 100, now=0.0)
    assert not budgets.spend("r", 1, now=0.0)
    assert budgets.spend("r", 50, now=0.5)  # half a second: half the budget back
    assert not budgets.spend("r", 1, now=0.5)
