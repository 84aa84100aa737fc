"""gunicorn settings for a web replica (`Procfile`, container entrypoint)."""

import math
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
worker_class = "deploy.uvicorn_worker.GameUvicornWorker"
# The worker drains (readiness delay + window), then uvicorn's graceful shutdown runs.
graceful_timeout = math.ceil(
    float(os.environ.get("DRAIN_READINESS_DELAY_SECONDS", "3"))
    + float(os.environ.get("DRAIN_WINDOW_SECONDS", "10"))
    + int(os.environ.get("GRACEFUL_SHUTDOWN_SECONDS", "25"))
    + 5
)
timeout = 60
keepalive = 75
accesslog = None
# uvicorn's per-socket lines ("[accepted]", "connection open/closed") are INFO: with
# LOG_LEVEL=WARNING a reconnect storm writes no log line per socket.
loglevel = os.environ.get("LOG_LEVEL", "INFO").lower()
# Several replicas share a host in `make fleet`: no shared control socket under $HOME.
control_socket_disable = True
