"""Computer opponents in the embedded mode: the bot's move runs in this process.

The move goes through the same compare-and-swap service as a human move, keyed
by the version it was scheduled for, so it happens at most once per turn even
if several replicas schedule it.
"""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings

from . import services
from .aio import call_then_read
from .groups import broadcast_text
from .protocol import StateMessage, encode

log = logging.getLogger(__name__)
_tasks: set[asyncio.Task[None]] = set()


def bot_due(state: StateMessage) -> bool:
    turn = state["turn"]
    if state["status"] != "playing" or turn is None:
        return False
    player = state["players"].get(turn)
    return bool(player and player.get("bot"))


def schedule_if_due(state: StateMessage) -> None:
    if bot_due(state):
        task = asyncio.create_task(_play(state["room"], state["version"]))
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)


async def _play(code: str, version: int) -> None:
    await asyncio.sleep(settings.BOT_THINK_SECONDS)
    try:
        moved, state = await call_then_read(services.bot_play, code=code, version=version)
    except Exception:
        log.exception("bot move failed in room %s", code)
        return
    if moved is not None and state is not None:
        await broadcast_text(code, "game.state", encode(state))
        schedule_if_due(state)
