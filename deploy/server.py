"""`python -m deploy.server`: one replica without gunicorn (`make run`, the tests'
replicas, the benchmark), configured like the gunicorn worker and draining the same way.

HOST, PORT and LOG_LEVEL come from the Django settings (config/settings/), loaded with
`config.asgi`'s default settings module unless DJANGO_SETTINGS_MODULE says otherwise."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")  # as config/asgi.py

import uvicorn
from django.conf import settings

from deploy.draining import DrainingServer
from deploy.uvicorn_worker import GameUvicornWorker


def main() -> None:
    """One replica with drain, configured like the gunicorn worker."""
    config = uvicorn.Config(
        "config.asgi:application",
        host=settings.HOST,
        port=settings.PORT,
        log_level=settings.LOG_LEVEL.lower(),
        **{k: v for k, v in GameUvicornWorker.CONFIG_KWARGS.items() if k != "proxy_headers"},
    )
    DrainingServer(config).run()


if __name__ == "__main__":
    main()
