"""Group names and the broadcasts every room member receives."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from game import play
from game.matchmaking import Pairing
from game.rooms import Applied, Presence, RoomRow
from game.selectors import state_of

from .metrics import GROUP_SEND_SECONDS
from .protocol import encode

log = logging.getLogger(__name__)


def room_group(code: str) -> str:
    return f"room.{code}"


async def broadcast_text(code: str, event_type: str, text: str) -> None:
    """Send one pre-encoded frame to every member of a room, on every replica."""
    layer = get_channel_layer()
    assert layer is not None
    started = time.perf_counter()
    await layer.group_send(room_group(code), {"type": event_type, "text": text})
    GROUP_SEND_SECONDS.observe(time.perf_counter() - started)


# --- what this replica knows of the rooms it serves -----------------------------------
# Every `state` a replica sends or receives carries the room row (without seat
# tokens) and its presence; the replica keeps, per room it serves, the newest row
# (highest version) and the newest presence (latest count) it has seen, so a move
# is planned on the row without reading the room first, and its `state` carries
# presence without counting connections again.
#
# Row and presence age separately: a move made on replica A before A heard of a
# socket closing on replica B carries the old presence at a new version, and the
# close's presence broadcast arrives at a lower version, which clients ignore. So
# each replica forwards to its own members the state of the newest row with the
# newest presence it knows, re-encoded once per event when the event's own text
# is behind on either.

known: dict[str, tuple[RoomRow, Presence]] = {}


def remember(row: RoomRow, presence: Presence) -> tuple[RoomRow, Presence]:
    """Merge into what we hold for a room with members here: the newer row (the later on
    a tie), the later presence. Returns the merged pair."""
    held = known.get(row.code)
    if held is not None:
        if held[0].version > row.version:
            row = held[0]
        if held[1].asof > presence.asof:
            presence = held[1]
    if row.code in local_rooms:
        known[row.code] = (row, presence)
    return row, presence


def known_row(code: str) -> RoomRow | None:
    held = known.get(code)
    return None if held is None else held[0]


def known_presence(code: str) -> Presence:
    held = known.get(code)
    return Presence() if held is None else held[1]


def state_text(event: dict[str, Any]) -> str:
    """The frame to forward for a `game.state` event: its own text, unless this replica
    knows a newer row or presence for the room (then the merged state, encoded once per
    event and shared by the members here)."""
    local = event.get("local")
    if local is not None:
        return str(local)
    text: str = event["text"]
    values = event.get("row")
    if values is not None:
        row = RoomRow.from_public(values, event.get("seats"))
        presence = Presence.from_public(event["presence"])
        merged = remember(row, presence)
        if merged != (row, presence):
            text = encode(state_of(*merged))
    event["local"] = text
    return text


async def broadcast_row(row: RoomRow, presence: Presence | None = None) -> None:
    """Send every member of the room, on every replica, the room's `state`."""
    if presence is None:
        presence = known_presence(row.code)
    row, presence = remember(row, presence)
    text = encode(state_of(row, presence))
    layer = get_channel_layer()
    assert layer is not None
    started = time.perf_counter()
    await layer.group_send(
        room_group(row.code),
        {
            "type": "game.state",
            "text": text,
            "row": row.public(),
            "seats": row.seats(),
            "presence": presence.public(),
        },
    )
    GROUP_SEND_SECONDS.observe(time.perf_counter() - started)


async def broadcast_left(applied: Applied, presence: Presence, *, reason: str) -> None:
    """Tell the room who gave up a seat (`left`), then send its `state`. The sockets that
    held the seat by the same token (other tabs, other replicas) become spectators as
    the event reaches them (GameRoom.game_left)."""
    mark = applied.write.vacated
    assert mark is not None
    layer = get_channel_layer()
    assert layer is not None
    frame = {
        "type": "left",
        "mark": mark,
        "name": applied.before.seat(mark).name,
        "reason": reason,
        "forfeit": applied.write.finished is not None,
    }
    event = {
        "type": "game.left",
        "text": encode(frame),
        "mark": mark,
        "holder": applied.before.seat(mark).token_hash,
    }
    await layer.group_send(room_group(applied.row.code), event)
    await broadcast_row(applied.row, presence)


async def on_room_changed(sender: object, *, row: RoomRow, presence: Presence, **_: Any) -> None:
    """game.signals.room_changed: a job changed the room."""
    await broadcast_row(row, presence)


async def on_seat_left(
    sender: object, *, applied: Applied, presence: Presence, reason: str, **_: Any
) -> None:
    """game.signals.seat_left: the workers released a seat."""
    await broadcast_left(applied, presence, reason=reason)


async def on_matched(sender: object, *, pairing: Pairing, **_: Any) -> None:
    """game.signals.matched: tell the waiting socket where its seat is."""
    frame = {
        "type": "matched",
        "room": pairing.room,
        "mark": pairing.mark,
        "token": pairing.token,
        "opponent": pairing.opponent,
    }
    layer = get_channel_layer()
    assert layer is not None
    await layer.send(pairing.channel_name, {"type": "game.direct", "text": encode(frame)})


async def broadcast_state(code: str) -> None:
    """Read the room and its presence now, and send it to the room."""
    found = await play.view(code)
    if found is not None:
        await broadcast_row(*found)


# --- presence broadcasts, coalesced --------------------------------------------------
# Every connect and disconnect changes a room's presence; broadcasting each one
# makes filling a room of N spectators cost N^2 frames. A change schedules one
# broadcast per room instead, and the changes in between ride along (the state
# is read when the broadcast leaves): within PRESENCE_BROADCAST_DELAY_SECONDS
# after a close or a seat change (the protocol promises a closed seat shows
# offline within a second), within PRESENCE_CONNECT_DELAY_SECONDS after a
# connect (a bigger spectator count; the newcomer's own `state` already counts
# it), so a swarm joining a room costs a broadcast a second, not four.

_presence_pending: dict[str, tuple[asyncio.Task[None], float]] = {}


def presence_changed(code: str, *, connect: bool = False) -> None:
    """Schedule the room's presence broadcast, unless one leaves soon enough already."""
    delay = (
        settings.PRESENCE_CONNECT_DELAY_SECONDS
        if connect
        else settings.PRESENCE_BROADCAST_DELAY_SECONDS
    )
    loop = asyncio.get_running_loop()
    due = loop.time() + delay
    pending = _presence_pending.get(code)
    if pending is not None:
        if pending[1] <= due:
            return
        pending[0].cancel()  # a close needs it sooner than the connect that scheduled it
    _presence_pending[code] = (asyncio.create_task(_presence_flush(code, delay)), due)


async def _presence_flush(code: str, delay: float) -> None:
    try:
        await asyncio.sleep(delay)
    finally:
        # Forget before reading: a change after the read schedules a new broadcast.
        pending = _presence_pending.get(code)
        if pending is not None and pending[0] is asyncio.current_task():
            del _presence_pending[code]
    try:
        await broadcast_state(code)
    except Exception:  # the broker is away: the re-send after it returns heals presence
        log.exception("room %s: presence broadcast failed", code)


def presence_pending() -> list[asyncio.Task[None]]:
    return [task for task, _ in _presence_pending.values()]


# --- rooms with members on this replica ------------------------------------------------

local_rooms: Counter[str] = Counter()


async def catch_up_local_rooms() -> None:
    """Re-send the state of every room served here whose version in the database is ahead
    of this replica's copy: a change whose broadcast never left (a worker or a replica
    that died between its commit and its publish) reaches the members within one
    ROOM_CATCH_UP_SECONDS. One statement for all the rooms served here."""
    codes = list(local_rooms)
    if not codes:
        return
    for code, version in (await play.versions(codes)).items():
        held = known_row(code)
        if held is None or version > held.version:
            await broadcast_state(code)


async def rebroadcast_local_rooms() -> None:
    """After the broker came back: broadcasts in flight when it went away are lost
    (a channel layer delivers at most once), so send every room we serve its
    current state again; clients keep the highest version, so this only heals."""
    for code in list(local_rooms):
        try:
            await broadcast_state(code)
        except Exception:  # one room's failure must not cost the others their state
            log.exception("room %s: state not re-sent after the broker returned", code)
