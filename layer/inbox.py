"""One local channel's buffered messages and the receivers waiting on it (layer/node.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any

from .metrics import DROPPED


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

    def put(self, payload: dict[str, Any], capacity: int) -> None:
        """Buffer a message and wake a receiver; past `capacity` the message is dropped."""
        messages = self.messages
        if messages is None:
            messages = self.messages = deque()
        elif len(messages) >= capacity:
            DROPPED.labels("full").inc()
            return
        messages.append((time.monotonic(), payload))
        waiter = self.waiter
        if waiter is not None:
            if isinstance(waiter, list):
                self.wake_one()
            elif not waiter.done():
                waiter.set_result(None)

    async def get(self, expiry: float, loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
        """The next message not older than `expiry` seconds. Several receivers may wait on
        one channel: each message goes to one of them, and a receiver cancelled after it
        was woken passes its wake-up on, so no message is left buffered while another
        waits."""
        while True:
            now = self.touched = time.monotonic()
            messages = self.messages
            while messages:
                stamp, payload = messages.popleft()
                if now - stamp > expiry:
                    DROPPED.labels("expired").inc()
                    continue
                if not messages:
                    self.messages = None  # an idle channel holds no buffer
                return payload
            if messages is not None:
                self.messages = None  # emptied by expiry
            waiter = loop.create_future()
            if self.waiter is None:
                self.waiter = waiter  # the usual case: the only receiver
            else:
                self.add_waiter(waiter)
            try:
                await waiter
            except BaseException:
                self.remove_waiter(waiter)
                self.touched = time.monotonic()
                if self.messages and self.waiter is not None:
                    self.wake_one()  # woken, then cancelled: another takes the message
                raise
            if self.waiter is waiter:
                self.waiter = None
            else:
                self.remove_waiter(waiter)
