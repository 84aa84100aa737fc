"""Waking futures in order, for the per-socket queues that replace asyncio's (their deques
cost memory on every idle socket): realtime/dispatch.py, deploy/uvicorn_worker.py."""

from __future__ import annotations

import asyncio


def wake_first(waiters: list[asyncio.Future[None]] | None) -> bool:
    """Wake the oldest waiter still waiting (cancelled ones are dropped); True if one was."""
    while waiters:
        waiter = waiters.pop(0)
        if not waiter.done():
            waiter.set_result(None)
            return True
    return False
