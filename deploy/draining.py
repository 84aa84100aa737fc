"""uvicorn's Server with a graceful drain on SIGTERM (see realtime/drain.py).

The first SIGTERM/SIGINT starts the drain; uvicorn's own shutdown follows once
the sockets are gone. A second signal shuts down at once. Both the gunicorn
worker class (deploy/uvicorn_worker.py) and the single-process runner
(deploy/server.py) serve through it.
"""

from __future__ import annotations

import asyncio
import logging
from types import FrameType

import uvicorn

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    _drain_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_task is not None or self.should_exit:
            super().handle_exit(sig, frame)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            super().handle_exit(sig, frame)
            return
        self._captured_signals.append(sig)
        self._drain_task = loop.create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        from realtime.drain import drain

        try:
            await drain()
        except Exception:
            log.exception("drain failed; shutting down")
        self.should_exit = True
