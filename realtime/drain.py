"""Graceful drain of a web replica (SIGTERM: deploy, scale-in).

1. Readiness fails at once (`/readyz` 503), so the load balancer stops sending
   new sockets here; new sockets that still arrive are closed with 1012.
2. After `DRAIN_READINESS_DELAY_SECONDS` (long enough for the balancer's
   health checks to notice), open sockets are closed with 1012 in batches
   spread over `DRAIN_WINDOW_SECONDS`, so clients do not all reconnect in the
   same instant. A socket busy with a message (a move) finishes it first.
3. When every socket is gone, the server shuts down as usual.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import weakref
from typing import Protocol

from django.conf import settings

from .metrics import DRAINING

log = logging.getLogger(__name__)

CLOSE_DRAINING = 1012


class Drainable(Protocol):
    async def drain_close(self) -> None: ...


_open: weakref.WeakSet[Drainable] = weakref.WeakSet()
_state = {"draining": False}


def is_draining() -> bool:
    return _state["draining"]


def register(consumer: Drainable) -> None:
    _open.add(consumer)


def unregister(consumer: Drainable) -> None:
    _open.discard(consumer)


def open_count() -> int:
    return len(_open)


async def drain(
    *,
    readiness_delay: float | None = None,
    window: float | None = None,
    tick: float = 0.25,
) -> None:
    """Run the drain; returns when no socket is left (or the window is long past)."""
    readiness_delay = (
        settings.DRAIN_READINESS_DELAY_SECONDS if readiness_delay is None else readiness_delay
    )
    window = settings.DRAIN_WINDOW_SECONDS if window is None else window
    _state["draining"] = True
    DRAINING.set(1)
    log.info("draining: readiness off; closing %d sockets in %.1fs", open_count(), window)
    await asyncio.sleep(readiness_delay)
    pending = list(_open)
    random.shuffle(pending)
    ticks = max(1, math.ceil(window / tick))
    per_tick = max(1, math.ceil(len(pending) / ticks))
    closing: list[asyncio.Task[None]] = []
    while pending:
        batch, pending = pending[:per_tick], pending[per_tick:]
        closing.extend(asyncio.create_task(consumer.drain_close()) for consumer in batch)
        if pending:
            await asyncio.sleep(tick)
    if closing:
        await asyncio.wait(closing, timeout=10)
    # Late arrivals were closed on connect; wait for disconnect handlers to finish.
    deadline = asyncio.get_running_loop().time() + 10
    # Polled: entries also leave the WeakSet when a consumer is collected.
    while _open and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    log.info("drained; %d sockets left", open_count())
