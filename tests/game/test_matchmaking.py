"""Quick match on one database: pairing, telling the players, and the seat tokens they get.

The `match.pair` handler (game/jobs.py) runs here as in the embedded mode: the in-memory
channel layer carries `matched` to each player's channel. What is proven:

- the token in `matched` reclaims the reserved seat (services, and on the wire through
  `config.asgi`);
- no raw seat token is stored: MatchTicket has no token column, the room holds only the
  SHA-256, and no table holds the token in any column;
- a notification sent again (a retried job, the sweep) carries the same token, and a
  player told once is not told again.

Runs on SQLite (`make test-sqlite`) and PostgreSQL (`make test-postgres`). The handler
reaches the database from Django's database thread, hence transactional tests.
"""

from __future__ import annotations

import asyncio
import json
import re
import string
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connection, connections

from config.asgi import application
from game import jobs, matchmaking, presence, services
from game.aio import call
from game.exceptions import GameError
from game.models import MatchTicket, Room
from game.play import close_store
from game.rooms import as_mark
from game.services import SeatGrant, token_hash

pytestmark = [
    pytest.mark.both_databases,
    pytest.mark.django_db(transaction=True, available_apps=["game", "django.contrib.auth"]),
]

REPLICA = "web-matchmaking-test"
URLSAFE = set(string.ascii_letters + string.digits + "-_")


# --- helpers ------------------------------------------------------------------------


@pytest.fixture
async def layer() -> AsyncIterator[Any]:
    found = get_channel_layer()
    assert found is not None
    yield found
    if jobs._local:  # an embedded-mode job still running: none outlives the test
        await asyncio.wait(list(jobs._local), timeout=5)
    await close_store()
    await sync_to_async(connections.close_all)()


async def waiting(layer: Any, *names: str) -> dict[str, tuple[int, str]]:
    """Each name in the quick-match line, in this order: name -> (ticket, channel)."""
    line = {}
    for name in names:
        channel = await layer.new_channel()
        ticket = await call(matchmaking.match_request, name=name, channel_name=channel)
        line[name] = (ticket, channel)
    return line


async def told(layer: Any, channel: str) -> list[dict[str, Any]]:
    """Every `matched` waiting on `channel`."""
    frames: list[dict[str, Any]] = []
    while True:
        try:
            message = await asyncio.wait_for(layer.receive(channel), 0.1)
        except TimeoutError:
            return frames
        assert message["type"] == "game.direct", message
        frame = json.loads(message["text"])
        assert frame["type"] == "matched", frame
        frames.append(frame)


def _reclaim(*, frame: dict[str, Any], name: str, channel: str) -> SeatGrant:
    presence.connection_open(code=frame["room"], channel_name=channel, replica=REPLICA)
    return services.seat_join(
        code=frame["room"], channel_name=channel, held=None, name=name, token=frame["token"]
    )


async def reclaim(frame: dict[str, Any], name: str, channel: str) -> SeatGrant:
    """Go to the room `frame` names and join with its token, as the page does."""
    return await call(_reclaim, frame=frame, name=name, channel=channel)


def rows_of_every_table() -> list[tuple[str, tuple[Any, ...]]]:
    """(table, row) for every row of every table in the database."""
    found: list[tuple[str, tuple[Any, ...]]] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            found.extend((table, row) for row in cursor.fetchall())
    return found


def assert_token_shape(token: str) -> None:
    """Like `secrets.token_urlsafe(24)`, which `joined` tokens are: 32 URL-safe characters."""
    assert len(token) == 32, token
    assert set(token) <= URLSAFE, token


# --- the token reclaims the seat ------------------------------------------------------


async def test_the_token_in_matched_reclaims_the_reserved_seat(layer: Any) -> None:
    line = await waiting(layer, "ana", "bo")
    await jobs.match_pair({})

    (ana,) = await told(layer, line["ana"][1])
    (bo,) = await told(layer, line["bo"][1])
    assert ana["room"] == bo["room"]
    assert ana["room"].startswith("qm-")
    assert (ana["mark"], ana["opponent"]) == ("X", "bo")  # older ticket: X
    assert (bo["mark"], bo["opponent"]) == ("O", "ana")
    assert ana["token"] != bo["token"]
    assert_token_shape(ana["token"])
    assert_token_shape(bo["token"])

    # Reclaiming changes nothing in the room: both seats were reserved at pairing.
    assert await reclaim(ana, "ana", "ana-at-room") == SeatGrant("X", "ana", ana["token"])
    assert await reclaim(bo, "bo", "bo-at-room") == SeatGrant("O", "bo", bo["token"])
    room = await Room.objects.aget(code=ana["room"])
    assert (room.version, room.x_name, room.o_name) == (2, "ana", "bo")

    # A token of the same shape that was not issued for the room is refused.
    forged = {**ana, "token": matchmaking.seat_token(ticket=0, room=ana["room"], mark="X")}
    with pytest.raises(GameError) as caught:
        await reclaim(forged, "eve", "eve-at-room")
    assert caught.value.code == "bad_token"


async def recv_type(client: WebsocketCommunicator, kind: str) -> dict[str, Any]:
    """The next frame of type `kind`, skipping others (welcome, state)."""
    while True:
        frame: dict[str, Any] = json.loads(await client.receive_from(timeout=5))
        if frame["type"] == kind:
            return frame


async def test_on_the_wire_matched_then_join_with_its_token_takes_the_seat(layer: Any) -> None:
    """Two lobby sockets ask for quick match; each connects to the room it is told and
    joins with the token it is told: `joined` gives the reserved mark."""
    opened: list[WebsocketCommunicator] = []

    async def open_socket(path: str) -> WebsocketCommunicator:
        client = WebsocketCommunicator(application, path)
        opened.append(client)
        connected, _ = await client.connect()
        assert connected, path
        await recv_type(client, "welcome")
        return client

    try:
        lobby = [await open_socket("/ws/game/lobby") for _ in range(2)]
        for client, name in zip(lobby, ("ana", "bo"), strict=True):
            await client.send_json_to({"type": "quickmatch", "name": name})
            await recv_type(client, "matching")
        matched = [await recv_type(client, "matched") for client in lobby]
        assert matched[0]["room"] == matched[1]["room"]
        for frame, name in zip(matched, ("ana", "bo"), strict=True):
            seat = await open_socket(f"/ws/game/{frame['room']}")
            await seat.send_json_to({"type": "join", "name": name, "token": frame["token"]})
            joined = await recv_type(seat, "joined")
            assert (joined["mark"], joined["token"]) == (frame["mark"], frame["token"])
    finally:
        for client in opened:
            await client.disconnect(timeout=5)


# --- nothing secret stored -----------------------------------------------------------


def test_match_tickets_keep_no_token() -> None:
    """The model has no token; the column stays one release for a rolling deploy (old
    replicas still write it), emptied, with a database default the new code relies on."""
    assert not [f.name for f in MatchTicket._meta.get_fields() if "token" in f.name]
    MatchTicket.objects.create(name="ana", channel_name="c-ana")
    with connection.cursor() as cursor:
        cursor.execute("SELECT token FROM game_matchticket")
        assert [row[0] for row in cursor.fetchall()] == [""]


async def test_no_table_holds_a_raw_seat_token_only_the_room_its_hash(layer: Any) -> None:
    line = await waiting(layer, "ana", "bo", "cy", "di")
    await jobs.match_pair({})
    frames = [frame for _, channel in line.values() for frame in await told(layer, channel)]
    assert len(frames) == 4

    for frame in frames:
        room = await Room.objects.aget(code=frame["room"])
        stored = room.x_token_hash if frame["mark"] == "X" else room.o_token_hash
        assert stored == token_hash(frame["token"])

    # Between pairing and telling as well: a line paired, nobody told yet.
    more = await waiting(layer, "ed", "flo")
    await call(matchmaking.match_pair)
    paired = MatchTicket.objects.filter(id__in=[t for t, _ in more.values()])
    pending = [
        matchmaking.seat_token(ticket=t.id, room=str(t.room_id), mark=as_mark(t.mark))
        async for t in paired
    ]
    assert len(pending) == 2
    tokens = [frame["token"] for frame in frames] + pending
    rows = await call(rows_of_every_table)
    assert any(table == Room._meta.db_table for table, _ in rows)
    leaks = [
        (table, row)
        for table, row in rows
        for value in row
        if isinstance(value, str | bytes)
        and any(
            token in (value.decode("latin1") if isinstance(value, bytes) else value)
            for token in tokens
        )
    ]
    assert leaks == []


# --- told again: the same token ----------------------------------------------------


async def test_a_job_redelivered_after_the_pairing_committed_tells_both_players(
    layer: Any,
) -> None:
    """The worker died after the pairing's commit and before telling anyone: the job comes
    back (RabbitMQ redelivers it, or the sweep runs it) and tells both, with tokens that
    take the seats reserved in the first attempt."""
    line = await waiting(layer, "ana", "bo")
    assert await call(matchmaking.match_pair) == 1  # the first attempt, then it died
    room_before = await Room.objects.aget(
        code=(await MatchTicket.objects.aget(id=line["ana"][0])).room_id
    )

    await jobs.match_pair({})  # the redelivered job
    (ana,) = await told(layer, line["ana"][1])
    (bo,) = await told(layer, line["bo"][1])
    assert ana["room"] == bo["room"] == room_before.code
    assert await reclaim(ana, "ana", "ana-at-room") == SeatGrant("X", "ana", ana["token"])
    assert await reclaim(bo, "bo", "bo-at-room") == SeatGrant("O", "bo", bo["token"])


async def test_a_notification_sent_again_carries_the_same_token(
    layer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first send reaches ana's socket but reports a failure (a publish that timed out
    after the broker took it): the job fails, both tickets are handed back, and the next
    pass tells ana again. Both copies carry the same token, and it takes the seat; then
    nobody is told a third time."""
    line = await waiting(layer, "ana", "bo")
    real_send: Callable[[str, dict[str, Any]], Awaitable[None]] = layer.send
    failed: list[str] = []

    async def delivered_then_timed_out(channel: str, message: dict[str, Any]) -> None:
        await real_send(channel, message)
        if not failed:
            failed.append(channel)
            raise TimeoutError("publish confirm timed out")

    monkeypatch.setattr(layer, "send", delivered_then_timed_out)
    with pytest.raises(TimeoutError):
        await jobs.match_pair({})
    assert failed == [line["ana"][1]]
    claimed = [t.id async for t in MatchTicket.objects.filter(notified=True)]
    assert claimed == [], "an unsent ticket stays claimed"

    await jobs.match_pair({})  # the retry
    first, again = await told(layer, line["ana"][1])
    assert first == again
    (bo,) = await told(layer, line["bo"][1])
    assert await reclaim(again, "ana", "ana-at-room") == SeatGrant("X", "ana", first["token"])
    assert await reclaim(bo, "bo", "bo-at-room") == SeatGrant("O", "bo", bo["token"])

    await jobs.match_pair({})  # the sweep: everyone has been told
    assert await told(layer, line["ana"][1]) == []
    assert await told(layer, line["bo"][1]) == []


def test_a_ticket_claimed_again_gets_the_same_token_and_is_claimed_once() -> None:
    tickets = [
        matchmaking.match_request(name=name, channel_name=f"ch-{name}") for name in ("ana", "bo")
    ]
    assert matchmaking.match_pair() == 1
    first = matchmaking.match_claim()
    assert [p.ticket for p in first] == tickets
    assert matchmaking.match_claim() == []  # claimed: nobody else tells them
    matchmaking.match_unclaim(tickets=tickets)  # the send failed
    again = matchmaking.match_claim()
    assert again == first
    room = Room.objects.get(code=first[0].room)
    assert (room.x_token_hash, room.o_token_hash) == tuple(token_hash(p.token) for p in first)


# --- the derivation --------------------------------------------------------------------


def test_seat_token_is_keyed_by_the_secret_and_bound_to_ticket_room_and_mark(
    settings: Any,
) -> None:
    token = matchmaking.seat_token(ticket=7, room="qm-abc", mark="X")
    assert_token_shape(token)
    assert token == matchmaking.seat_token(ticket=7, room="qm-abc", mark="X")
    others = {
        matchmaking.seat_token(ticket=8, room="qm-abc", mark="X"),
        matchmaking.seat_token(ticket=7, room="qm-abd", mark="X"),
        matchmaking.seat_token(ticket=7, room="qm-abc", mark="O"),
        matchmaking.seat_token(ticket=7, room="qm-abc", mark="X", secret="another key"),
    }
    assert token not in others
    assert len(others) == 4
    settings.SECRET_KEY = "another key"
    assert matchmaking.seat_token(ticket=7, room="qm-abc", mark="X") != token
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", token)


def test_a_pairing_made_before_a_key_rotation_is_told_the_token_its_seat_holds(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Paired under the old SECRET_KEY, told under the new one with the old one in
    SECRET_KEY_FALLBACKS (Django's rotation): the token told is the one the room hashed."""
    settings.SECRET_KEY = "old key"
    for name in ("ana", "bo"):
        matchmaking.match_request(name=name, channel_name=f"ch-{name}")
    matchmaking.match_pair()
    settings.SECRET_KEY = "new key"
    settings.SECRET_KEY_FALLBACKS = ["old key"]
    pairings = matchmaking.match_claim()
    room = Room.objects.get(code=pairings[0].room)
    assert [token_hash(p.token) for p in pairings] == [room.x_token_hash, room.o_token_hash]
    assert not [r for r in caplog.records if r.name == "game.matchmaking"]

    # Without the old key nothing derives it: logged, and the seat stays unreclaimable.
    matchmaking.match_unclaim(tickets=[p.ticket for p in pairings])
    settings.SECRET_KEY_FALLBACKS = []
    with caplog.at_level("ERROR", logger="game.matchmaking"):
        assert [token_hash(p.token) for p in matchmaking.match_claim()] != [
            room.x_token_hash,
            room.o_token_hash,
        ]
    assert "share SECRET_KEY" in caplog.text
