"""ASGI lifespan: start the replica heartbeat and the rooms' catch-up, retire the replica
on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from channels.layers import get_channel_layer

from game import jobs, play

from . import replica
from .groups import rebroadcast_local_rooms

log = logging.getLogger(__name__)


class Lifespan:
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                layer = get_channel_layer()
                if hasattr(layer, "on_reconnect"):
                    layer.on_reconnect(rebroadcast_local_rooms)
                try:
                    await replica.retire_predecessors()
                except Exception:  # the database is not there yet: the sweep gets them later
                    log.warning("could not drop a predecessor's connections", exc_info=True)
                tasks = [
                    asyncio.create_task(replica.heartbeat_forever(stop)),
                    asyncio.create_task(replica.catch_up_forever(stop)),
                ]
                log.info("replica %s up", replica.replica_name())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                stop.set()
                for task in tasks:
                    await task
                with contextlib.suppress(Exception):
                    await replica.retire()
                await jobs.settle(within=5.0)  # publishes that follow the last moves
                await play.close_store()
                await send({"type": "lifespan.shutdown.complete"})
                return
