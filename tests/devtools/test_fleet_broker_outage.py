"""A RabbitMQ outage degrades the game, it does not break it (docs/protocol.md,
"Presence and limits"): with the broker stopped mid-game on a 2-replica fleet, a mover
still gets its answer, members on the mover's replica still see every move, nobody is
closed (no 1011) or told an error, and once the broker is back every member, on every
replica, has the room's latest state within 2 s. Real gunicorn replicas
(devtools/fleet/), PostgreSQL, the machine's RabbitMQ (its application stopped and
always started again)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.fleet import Fleet
from gameclient import codec
from gameclient.connection import Connection
from tests.support.broker import broker_ready, rabbitmqctl
from tests.support.connections import OpenClient
from tests.support.timing import budget

pytestmark = [pytest.mark.e2e, pytest.mark.fleet]

# docs/protocol.md: every member converges within 2 s of the broker's return.
CONVERGED_WITHIN = budget(2.0)
ANSWER_WITHIN = budget(3.0)  # a move's own answer, and its replica's members, meanwhile


@pytest.fixture
def fleet(database_url: str, rabbitmq_url: str, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(
        2,
        settings="config.settings.test",
        database_url=database_url,
        rabbitmq_url=rabbitmq_url,
        log_dir=tmp_path / "fleet",
        env={"BOT_THINK_SECONDS": "0"},
    )
    with fleet:
        yield fleet
    assert fleet.pids() == set(), "the fleet left processes behind"


async def member(
    fleet: Fleet, clients: OpenClient, replica: int, room: str, name: str
) -> Connection:
    client = await clients(f"{fleet.replicas[replica].ws_url}/ws/game/{room}", name)
    await client.next("welcome")
    return client


async def player(
    fleet: Fleet, clients: OpenClient, replica: int, room: str, name: str
) -> Connection:
    client = await member(fleet, clients, replica, room, name)
    await client.send(codec.join(name))
    await client.next("joined")
    return client


def untroubled(clients: list[Connection]) -> list[str]:
    """Every client still open, no error frame: what went wrong, by client."""
    trouble = []
    for client in clients:
        errors = [m for m in client.messages if m.get("type") == "error"]
        if client.closed or errors:
            trouble.append(f"{client.label}: closed={client.closed} errors={errors}")
    return trouble


async def test_a_broker_outage_degrades_and_heals_within_two_seconds(
    fleet: Fleet, clients: OpenClient
) -> None:
    # "same": both players and a spectator on the first replica; "split": one player
    # on each replica.
    ana = await player(fleet, clients, 0, "same", "ana")
    bo = await player(fleet, clients, 0, "same", "bo")
    watcher = await member(fleet, clients, 0, "same", "watcher")
    cy = await player(fleet, clients, 0, "split", "cy")
    dee = await player(fleet, clients, 1, "split", "dee")
    everyone = [ana, bo, watcher, cy, dee]
    for client in everyone:
        await client.at_version(2)

    await asyncio.to_thread(rabbitmqctl, "stop_app")
    try:
        await ana.send(codec.move(4))
        for client in (ana, bo, watcher):  # the mover's answer, and its replica's members
            assert (await client.at_version(3, within=ANSWER_WITHIN))["board"][4] == "X"
        await bo.send(codec.move(0))
        for client in (ana, bo, watcher):
            assert (await client.at_version(4, within=ANSWER_WITHIN))["board"][0] == "O"
        await cy.send(codec.move(8))
        assert (await cy.at_version(3, within=ANSWER_WITHIN))["board"][8] == "X"
    finally:
        await asyncio.to_thread(rabbitmqctl, "start_app", within=60)
        back = time.monotonic()  # start_app returns once the broker takes connections
        await asyncio.to_thread(broker_ready)

    # The other replica's member hears of the move made while the broker was away.
    assert (await dee.at_version(3, within=budget(30)))["board"][8] == "X"
    healed = time.monotonic() - back
    print(f"fleet-metric broker_outage converged_s={healed:.2f}")
    assert healed <= CONVERGED_WITHIN
    # The game goes on across replicas as before.
    await dee.send(codec.move(0))
    assert (await cy.at_version(4, within=budget(5)))["board"][0] == "O"
    assert untroubled(everyone) == []
