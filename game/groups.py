"""Group names and the broadcasts every room member receives."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from channels.layers import get_channel_layer
from django.conf import settings

from .aio import read_state
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


async def broadcast_state(code: str) -> None:
    state = await read_state(code)
    if state is not None:
        await broadcast_text(code, "game.state", encode(state))


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
