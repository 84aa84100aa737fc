"""Seats come free across processes: a seat given up on one replica stops working on
another, and a seat whose holder stayed away is released by a worker process, its
forfeit counted. Real gunicorn replicas and a worker (devtools/fleet/), PostgreSQL and
RabbitMQ; every wait is for a frame or a row, bounded by a scaled budget."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.fleet import Fleet
from gameclient import codec
from tests.support.connections import OpenClient
from tests.support.http import get_json
from tests.support.timing import budget

pytestmark = [pytest.mark.e2e, pytest.mark.fleet]

FLEET_ENV = {
    "BOT_THINK_SECONDS": "0",
    "SEAT_OFFLINE_RELEASE_SECONDS": "1",
    "PRESENCE_HEARTBEAT_SECONDS": "1",
}
# The worker sweeps every 5 s; a seat away for 1 s goes with the next sweep.
RELEASED_WITHIN = budget(20.0)


@pytest.fixture
def fleet(database_url: str, rabbitmq_url: str, tmp_path: Path) -> Iterator[Fleet]:
    """Two replicas and one worker."""
    fleet = Fleet(
        2,
        workers=1,
        worker_command="run_workers",
        settings="config.settings.test",
        database_url=database_url,
        rabbitmq_url=rabbitmq_url,
        log_dir=tmp_path / "fleet",
        env=FLEET_ENV,
    )
    with fleet:
        yield fleet
    assert fleet.pids() == set(), "the fleet left processes behind"


async def seated(fleet: Fleet, clients: OpenClient, room: str) -> tuple[Any, Any]:
    """ana at X on the first replica, bo at O on the second; both saw version 2."""
    seats = []
    for replica, name in zip(fleet.replicas, ("ana", "bo"), strict=True):
        client = await clients(f"{replica.ws_url}/ws/game/{room}", name)
        await client.next("welcome")
        await client.send(codec.join(name))
        seats.append((client, await client.next("joined")))
    for client, _ in seats:
        await client.at_version(2)
    return seats[0], seats[1]


async def leaderboard_row(fleet: Fleet, name: str) -> tuple[int, int, int]:
    deadline = asyncio.get_running_loop().time() + budget(20.0)
    while True:
        status, body = await asyncio.to_thread(get_json, f"{fleet.replicas[0].url}/api/leaderboard")
        assert status == 200, body
        rows = {row["name"]: row for row in body["leaderboard"]}
        if name in rows:
            return rows[name]["wins"], rows[name]["losses"], rows[name]["draws"]
        assert asyncio.get_running_loop().time() < deadline, f"{name} never counted: {rows}"
        await asyncio.sleep(0.1)


async def test_a_seat_given_up_on_one_replica_is_gone_on_the_other(
    fleet: Fleet, clients: OpenClient
) -> None:
    (ana, joined), (bo, _) = await seated(fleet, clients, "tabs")
    other_tab = await clients(f"{fleet.replicas[1].ws_url}/ws/game/tabs", "ana-tab")
    await other_tab.next("welcome")
    await other_tab.send(codec.join("ana", joined["token"]))
    assert (await other_tab.next("joined"))["mark"] == "X"
    await ana.send(codec.leave())
    for member in (ana, bo, other_tab):
        assert (await member.next("left"))["mark"] == "X"
        await member.at_version(3)
    await other_tab.send(codec.move(0))
    assert (await other_tab.next("error"))["code"] == "not_joined"


async def test_a_worker_releases_a_seat_left_offline_and_counts_the_forfeit(
    fleet: Fleet, clients: OpenClient
) -> None:
    (ana, _), (bo, _) = await seated(fleet, clients, "away")
    await ana.send(codec.move(4))
    await bo.at_version(3)
    await bo.close()
    left = await ana.next("left", within=RELEASED_WITHIN)
    assert left == {"type": "left", "mark": "O", "name": "bo", "reason": "offline", "forfeit": True}
    state = await ana.at_version(4)
    assert state["players"]["O"] is None
    assert await leaderboard_row(fleet, "ana") == (1, 0, 0)
    assert await leaderboard_row(fleet, "bo") == (0, 1, 0)
