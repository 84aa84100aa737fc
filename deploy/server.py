"""`python -m deploy.server`: one replica without gunicorn (`make run`, the tests'
replicas, the benchmark), configured like the gunicorn worker and draining the same way."""

from __future__ import annotations

import os

import uvicorn

from deploy.draining import DrainingServer
from deploy.uvicorn_worker import GameUvicornWorker


def main() -> None:
    """One replica with drain, configured like the gunicorn worker."""
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
