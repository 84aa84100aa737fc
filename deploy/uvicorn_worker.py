"""gunicorn worker class for the web replicas: uvicorn with the game's WebSocket options
and a graceful drain on SIGTERM."""

from __future__ import annotations

import os
import sys
from typing import Any

from gunicorn.arbiter import Arbiter
from uvicorn.workers import UvicornWorker

from deploy.server import DrainingServer


class GameUvicornWorker(UvicornWorker):
    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "uvloop",
        "http": "httptools",
        "ws": "websockets-sansio",
        "lifespan": "on",
        # Frames above the protocol's limit are closed with 1009 by the server itself.
        "ws_max_size": int(os.environ.get("MAX_FRAME_BYTES", "16384")),
        "ws_ping_interval": 20.0,
        "ws_ping_timeout": 20.0,
        "proxy_headers": True,
        "timeout_graceful_shutdown": int(os.environ.get("GRACEFUL_SHUTDOWN_SECONDS", "25")),
    }

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = DrainingServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
