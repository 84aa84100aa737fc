"""gunicorn worker class for the web replicas: uvicorn with the game's WebSocket options."""

from __future__ import annotations

import os
from typing import Any

from uvicorn.workers import UvicornWorker


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
