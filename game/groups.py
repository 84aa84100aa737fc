"""Group names and the broadcasts every room member receives."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from . import play
from .metrics import GROUP_SEND_SECONDS
from .protocol import encode
from .rooms import Presence, RoomRow
from .selectors import state_of

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
# tokens) and its presence; the replica keeps the newest per room it serves, so
# a move is planned on it without reading the room first, and its `state`
# carries presence without counting connections again.

known: dict[str, tuple[RoomRow, Presence]] = {}


def remember(row: RoomRow, presence: Presence) -> None:
    """Keep the newer of what we hold and `row` (the later one on a tie), for rooms
    with members here."""
    if row.code not in local_rooms:
        return
    held = known.get(row.code)
    if held is None or held[0].version <= row.version:
        known[row.code] = (row, presence)


def known_row(code: str) -> RoomRow | None:
    held = known.get(code)
    return None if held is None else held[0]


def known_presence(code: str) -> Presence:
    held = known.get(code)
    return Presence() if held is None else held[1]


def observe(event: dict[str, Any]) -> None:
    """A `game.state` event from any replica: keep its row if it is newer."""
    values = event.get("row")
    if values is None:
        return
    held = known.get(values[0])
    if held is not None and held[0].version > values[1]:
        return
    x, o, spectators = event["presence"]
    remember(RoomRow.from_public(values), Presence(x=x, o=o, spectators=spectators))


async def broadcast_row(row: RoomRow, presence: Presence | None = None) -> None:
    """Send every member of the room, on every replica, the room's `state`."""
    if presence is None:
        presence = known_presence(row.code)
    remember(row, presence)
    text = encode(state_of(row, presence))
    layer = get_channel_layer()
    assert layer is not None
    started = time.perf_counter()
    await layer.group_send(
        room_group(row.code),
        {"type": "game.state", "text": text, "row": row.public(), "presence": presence.public()},
    )
    GROUP_SEND_SECONDS.observe(time.perf_counter() - started)


async def broadcast_state(code: str) -> None:
    """Read the room and its presence now, and send it to the room."""
    found = await play.view(code)
    if found is not None:
        await broadcast_row(*found)


# --- presence broadcasts, coalesced --------------------------------------------------
# Every connect and disconnect changes a room's presence; broadcasting each one
# makes filling a room of N spectators cost N^2 frames. A change schedules one
# broadcast per room after PRESENCE_BROADCAST_DELAY_SECONDS instead, and the
# changes in between ride along (the state is read when the broadcast leaves).

_presence_pending: dict[str, asyncio.Task[None]] = {}


def presence_changed(code: str) -> None:
    if code not in _presence_pending:
        _presence_pending[code] = asyncio.create_task(_presence_flush(code))


async def _presence_flush(code: str) -> None:
    try:
        await asyncio.sleep(settings.PRESENCE_BROADCAST_DELAY_SECONDS)
    finally:
        # Forget before reading: a change after the read schedules a new broadcast.
        _presence_pending.pop(code, None)
    try:
        await broadcast_state(code)
    except Exception:  # the broker is away: the re-send after it returns heals presence
        log.exception("room %s: presence broadcast failed", code)


def presence_pending() -> list[asyncio.Task[None]]:
    return list(_presence_pending.values())


# --- rooms with members on this replica ------------------------------------------------

local_rooms: Counter[str] = Counter()


async def rebroadcast_local_rooms() -> None:
    """After the broker came back: broadcasts in flight when it went away are lost
    (a channel layer delivers at most once), so send every room we serve its
    current state again; clients keep the highest version, so this only heals."""
    for code in list(local_rooms):
        try:
            await broadcast_state(code)
        except Exception:  # one room's failure must not cost the others their state
            log.exception("room %s: state not re-sent after the broker returned", code)
