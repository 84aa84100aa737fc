"""One local channel's buffered messages and the receivers waiting on it (layer/node.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any


class Inbox:
    """Buffered messages of one local channel, and the receivers waiting on it.

    Kept small: there is one per open socket, and most of them sit idle. The
    message buffer exists only while it holds messages (`None` when empty).
    `waiter` is `None` when nobody waits (the sweeper reads it so), one future
    in the usual case of a single receiver, and a list of futures, oldest first,
    only while several receivers wait on the channel at once.
    """

    __slots__ = ("groups", "messages", "touched", "waiter")

    def __init__(self) -> None:
        self.messages: deque[tuple[float, dict[str, Any]]] | None = None
        self.waiter: asyncio.Future[None] | list[asyncio.Future[None]] | None = None
        self.groups: set[str] = set()
        self.touched = time.monotonic()

    def add_waiter(self, waiter: asyncio.Future[None]) -> None:
        current = self.waiter
        if current is None:
            self.waiter = waiter
        elif isinstance(current, list):
            current.append(waiter)
        else:
            self.waiter = [current, waiter]

    def remove_waiter(self, waiter: asyncio.Future[None]) -> None:
        current = self.waiter
        if current is waiter:
            self.waiter = None
        elif isinstance(current, list):
            with contextlib.suppress(ValueError):
                current.remove(waiter)
            if len(current) <= 1:
                self.waiter = current[0] if current else None

    def wake_one(self) -> None:
        """Wake the oldest receiver not woken yet, if any.

        Called once per message delivered, and by a woken receiver that is cancelled
        before it runs. So while anyone waits unwoken, there are at least as many
        woken receivers on their way as there are buffered messages: a receiver only
        starts waiting on an empty buffer, and a woken one that finds the buffer
        empty (another receiver got there first) waits again.
        """
        current = self.waiter
        if isinstance(current, list):
            for waiter in current:
                if not waiter.done():
                    waiter.set_result(None)
                    return
        elif current is not None and not current.done():
            current.set_result(None)
