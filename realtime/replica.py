"""This process as a replica: its name, its heartbeat and the sweep of dead peers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from functools import cache

from django.conf import settings

from game import jobs, presence
from game.aio import call

from .groups import broadcast_state, catch_up_local_rooms

log = logging.getLogger(__name__)


@cache
def replica_name() -> str:
    """The name players see in `welcome.server`: `REPLICA_NAME`, else host name plus pid."""
    return settings.REPLICA_NAME or f"{settings.HOSTNAME}-{os.getpid()}"


def generation() -> str:
    """The start of this replica's server (settings.REPLICA_GENERATION: drawn when the
    settings load, in gunicorn's master before it forks its workers): processes of one
    generation are siblings, any other generation under the same name is gone."""
    return str(settings.REPLICA_GENERATION)


@cache
def replica_id() -> str:
    """The key this process's presence rows hang on: unique per process start,
    `<name>.<generation>.<pid>.<random>`.

    A replica restarted under the same name (a pod's container restart, the fleet's
    restart) must not vouch for its predecessor's rows; it removes them when it starts.
    """
    return f"{replica_name()}.{generation()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


async def retire_predecessors() -> None:
    """At startup: connections of an earlier start under this name died with it; drop
    them now rather than after the presence timeout (ghost players and spectators)."""
    rooms = await call(
        presence.replica_retire_predecessors, name=replica_name(), generation=generation()
    )
    for code in rooms:
        await broadcast_state(code)
    if rooms:
        log.info("dropped a predecessor's connections from %d rooms", len(rooms))


async def beat_once() -> None:
    await call(presence.replica_beat, replica=replica_id())
    rooms = await call(presence.replicas_sweep, timeout_seconds=settings.PRESENCE_TIMEOUT_SECONDS)
    for code in rooms:
        await broadcast_state(code)
    if rooms:
        log.info("swept connections of dead replicas from %d rooms", len(rooms))
    if not settings.RABBITMQ_URL:  # embedded mode: no worker fleet sweeps for us
        await jobs.sweep()


async def heartbeat_forever(stop: asyncio.Event) -> None:
    """Vouch for this replica's connections until `stop` is set."""
    while not stop.is_set():
        try:
            await beat_once()
        except Exception:
            log.exception("replica heartbeat failed; retrying")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.PRESENCE_HEARTBEAT_SECONDS)


async def catch_up_forever(stop: asyncio.Event) -> None:
    """Every ROOM_CATCH_UP_SECONDS: re-send rooms whose last change was never broadcast."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.ROOM_CATCH_UP_SECONDS)
        try:
            await catch_up_local_rooms()
        except Exception:
            log.exception("catching up rooms failed; retrying")


async def retire() -> None:
    """Leave cleanly: drop this replica's rows and tell the rooms it served."""
    rooms = await call(presence.replica_retire, replica=replica_id())
    for code in rooms:
        await broadcast_state(code)
