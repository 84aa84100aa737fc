"""Group names and the broadcasts every room member receives."""

from __future__ import annotations

import time

from channels.layers import get_channel_layer

from .aio import read_state
from .metrics import GROUP_SEND_SECONDS
from .protocol import encode


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
