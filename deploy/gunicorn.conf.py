"""gunicorn settings for a web replica (`Procfile`, container entrypoint).

The knobs come from the Django settings (config/settings/, which read the environment:
PORT, WEB_CONCURRENCY, DRAIN_*, GRACEFUL_SHUTDOWN_SECONDS, LOG_LEVEL), loaded here with
the settings module the app itself will use (`config.asgi`'s default unless
DJANGO_SETTINGS_MODULE says otherwise).
"""

import math
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")  # as config/asgi.py

from django.conf import settings

bind = f"0.0.0.0:{settings.PORT}"
workers = settings.WEB_CONCURRENCY
worker_class = "deploy.uvicorn_worker.GameUvicornWorker"
# The worker drains (readiness delay + window), then uvicorn's graceful shutdown runs.
graceful_timeout = math.ceil(
    settings.DRAIN_READINESS_DELAY_SECONDS
    + settings.DRAIN_WINDOW_SECONDS
    + settings.GRACEFUL_SHUTDOWN_SECONDS
    + 5
)
timeout = 60
keepalive = 75
accesslog = None
# uvicorn's per-socket lines ("[accepted]", "connection open/closed") are INFO: with
# LOG_LEVEL=WARNING a reconnect storm writes no log line per socket.
loglevel = settings.LOG_LEVEL.lower()
# Several replicas share a host in `make fleet`: no shared control socket under $HOME.
control_socket_disable = True
