"""uvicorn's Server with a graceful drain on SIGTERM (see realtime/drain.py).

The first SIGTERM/SIGINT starts the drain; uvicorn's own shutdown follows once
the sockets are gone. A second signal shuts down at once.
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


def main() -> None:
    """`python -m deploy.server`: one replica with drain, configured like the gunicorn worker."""
    import os

    from deploy.uvicorn_worker import GameUvicornWorker

    config = uvicorn.Config(
        "config.asgi:application",
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        log_level=os.environ.get("LOG_LEVEL", "INFO").lower(),
        **{k: v for k, v in GameUvicornWorker.CONFIG_KWARGS.items() if k != "proxy_headers"},
    )
    DrainingServer(config).run()


if __name__ == "__main__":
    main()
