"""Seats and rooms nobody uses (game/lifecycle.py) and the workers' sweep that frees them
(game/jobs.py `sweep`): a seat whose holder stayed away is released as `leave` would
(forfeit counted), a seat with an open socket never is, a quick-match seat nobody took
goes too; empty idle rooms are removed and their finished games stay.

"Away for long" is made by moving the room's timestamps into the past, never by
waiting. Runs on SQLite and on PostgreSQL (DATABASE_URL: the writes take the async
store's path, hence transactional tests).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.db import connections
from django.utils import timezone

from game import jobs, lifecycle, matchmaking, play, presence, rooms, services
from game.models import Connection, GameResult, MatchTicket, Replica, Room
from game.play import close_store
from game.selectors import room_state
from game.services import SeatGrant

pytestmark = [
    pytest.mark.both_databases,
    pytest.mark.django_db(transaction=True, available_apps=["game"]),
]

ROOM = "r1"
REPLICA = "web-test-1"
AWAY = 120.0  # SEAT_OFFLINE_RELEASE_SECONDS in these tests


@pytest.fixture(autouse=True)
async def lifecycle_settings(settings: Any) -> AsyncIterator[None]:
    settings.SEAT_OFFLINE_RELEASE_SECONDS = AWAY
    settings.EMPTY_ROOM_SECONDS = 600.0
    settings.RABBITMQ_URL = ""  # jobs the sweep starts run in this process
    yield
    await jobs.settle(within=5)
    await close_store()
    await sync_to_async(connections.close_all)()  # the ORM thread's connection


@database_sync_to_async
def connect(channel: str, *, code: str = ROOM, replica: str = REPLICA) -> str:
    presence.connection_open(code=code, channel_name=channel, replica=replica)
    return channel


@database_sync_to_async
def join(channel: str, name: str, *, code: str = ROOM) -> SeatGrant:
    return services.seat_join(code=code, channel_name=channel, held=None, name=name, token=None)


@database_sync_to_async
def close(channel: str) -> None:
    presence.connection_close(channel_name=channel)


@database_sync_to_async
def backdate(code: str = ROOM, *, seconds: float = AWAY + 1, **fields: bool) -> None:
    """Move the room's last change and the named away times `seconds` into the past."""
    then = timezone.now() - timedelta(seconds=seconds)
    Room.objects.filter(code=code).update(
        updated_at=then, **{f"{name}": then for name, on in fields.items() if on}
    )


@database_sync_to_async
def state(code: str = ROOM) -> dict[str, Any] | None:
    return dict(room_state(code) or {}) or None


@database_sync_to_async
def result_rows() -> list[tuple[str, str, str]]:
    return list(GameResult.objects.order_by("key").values_list("x_name", "o_name", "winner"))


async def seated(code: str = ROOM) -> tuple[SeatGrant, SeatGrant]:
    x = await join(await connect(f"{code}-ana", code=code), "ana", code=code)
    o = await join(await connect(f"{code}-bo", code=code), "bo", code=code)
    return x, o


async def test_a_seat_away_past_the_setting_is_released_and_its_game_forfeited() -> None:
    await seated()
    await database_sync_to_async(services.move_play)(code=ROOM, mark="X", cell=4, version=None)
    await close(f"{ROOM}-bo")
    await backdate(o_away_since=True)
    await jobs.release_away_seats()
    after = await state()
    assert after is not None
    assert after["players"]["O"] is None
    assert after["players"]["X"] == {"name": "ana", "online": True}
    assert after["board"] == [None] * 9
    assert await result_rows() == [("ana", "bo", "X")]
    # Released once: the next sweep finds nothing.
    version = after["version"]
    await jobs.release_away_seats()
    assert (await state() or {})["version"] == version


async def test_a_seat_away_for_less_than_the_setting_stays() -> None:
    await seated()
    await close(f"{ROOM}-bo")
    await backdate(seconds=AWAY - 30, o_away_since=True)
    await jobs.release_away_seats()
    assert (await state() or {})["players"]["O"] == {"name": "bo", "online": False}


async def test_a_seat_with_an_open_socket_is_never_released() -> None:
    await seated()
    await backdate(seconds=10 * AWAY, x_away_since=True, o_away_since=True)
    await jobs.release_away_seats()
    players = (await state() or {})["players"]
    assert players["X"] == {"name": "ana", "online": True}
    assert players["O"] == {"name": "bo", "online": True}


async def test_a_seat_held_only_on_a_dead_replica_is_released() -> None:
    await join(await connect("ana", replica="dead"), "ana")
    await backdate()
    old = timezone.now() - timedelta(seconds=600)
    await database_sync_to_async(Replica.objects.filter(name="dead").update)(heartbeat_at=old)
    await jobs.release_away_seats()
    assert (await state() or {})["players"]["X"] is None
    assert await result_rows() == []  # nobody had played: nothing forfeited


async def test_a_quick_match_seat_nobody_took_is_released_then_the_room_removed() -> None:
    for name, channel in (("ana", "qa"), ("bo", "qb")):
        await database_sync_to_async(matchmaking.match_request)(name=name, channel_name=channel)
    assert await database_sync_to_async(matchmaking.match_pair)() == 1
    code = await database_sync_to_async(lambda: Room.objects.get(code__startswith="qm-").code)()
    await backdate(code)
    await jobs.release_away_seats()
    assert (await state(code) or {})["players"] == {"X": None, "O": None}
    await backdate(code, seconds=601)
    await jobs.sweep()
    assert await state(code) is None
    # The tickets outlive their room.
    assert await database_sync_to_async(MatchTicket.objects.filter(room=None).count)() == 2


async def test_a_release_loses_to_a_seat_that_changed_hands() -> None:
    await seated()
    await close(f"{ROOM}-bo")
    away = await database_sync_to_async(lifecycle.seats_away)(older_than_seconds=-1)
    assert [(code, mark) for code, mark, _ in away] == [(ROOM, "O")]
    # bo leaves and cy sits down before the release lands: cy's seat is not bo's.
    await database_sync_to_async(services.act)(
        ROOM, lambda row: rooms.plan_leave(row, mark="O", holder=None)
    )
    await join(await connect("cy"), "cy")
    assert await play.release(code=ROOM, mark="O", holder=away[0][2]) is None
    assert (await state() or {})["players"]["O"] == {"name": "cy", "online": True}


async def test_only_empty_idle_rooms_are_removed_and_their_results_stay() -> None:
    # "done": a finished game, both players gone (seats released); "busy": a spectator;
    # "seated": a seat taken; "fresh": empty but changed just now.
    await seated("done")
    for mark, cell in (("X", 0), ("O", 3), ("X", 1), ("O", 4), ("X", 2)):
        await database_sync_to_async(services.move_play)(
            code="done", mark=mark, cell=cell, version=None
        )
    for channel in ("done-ana", "done-bo"):
        await close(channel)
    await backdate("done", x_away_since=True, o_away_since=True)
    await jobs.release_away_seats()
    await connect("watcher", code="busy")
    await join(await connect("solo", code="seated"), "solo", code="seated")
    await close("solo")
    await connect("gone", code="fresh")
    await close("gone")
    for code in ("done", "busy", "seated"):
        await backdate(code, seconds=601)
    removed = await database_sync_to_async(lifecycle.rooms_remove_empty)(older_than_seconds=600)
    assert removed == 1
    codes = await database_sync_to_async(lambda: set(Room.objects.values_list("code", flat=True)))()
    assert codes == {"busy", "seated", "fresh"}
    assert await result_rows() == [("ana", "bo", "X")]
    assert await database_sync_to_async(Connection.objects.filter(room_id="busy").count)() == 1
    # A socket that comes for a removed room makes it again.
    await connect("back", code="done")
    assert (await state("done") or {})["version"] == 0
