"""Real replicas (`python -m deploy.server`) for end-to-end tests: free ports, clean shutdown."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from devtools.fleet import Replica
from devtools.processes import ROOT, ProcessError, free_port, wait_http


class UvicornServer:
    """One replica: `python -m deploy.server` (uvicorn with the drain) on a free port.

    The database is whatever `env` says (tests pass a temporary SQLite file or
    a PostgreSQL URL); migrations run once before the first start.
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str],
        port: int | None = None,
        name: str = "replica",
        log_dir: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.name = name
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "REPLICA_NAME": name,
            "PYTHONUNBUFFERED": "1",
            "PORT": str(self.port),
            "GRACEFUL_SHUTDOWN_SECONDS": "5",
            "DRAIN_READINESS_DELAY_SECONDS": "0",
            "DRAIN_WINDOW_SECONDS": "0.5",
            **env,
        }
        log_path = (log_dir or Path("/tmp")) / f"uvicorn-{name}-{self.port}.log"
        self.child = Replica(name=name, log_path=log_path, port=self.port)

    @property
    def log_path(self) -> Path:
        return self.child.log_path

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.child.proc

    @property
    def url(self) -> str:
        return self.child.url

    @property
    def ws_url(self) -> str:
        return self.child.ws_url

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=self.env,
            check=True,
        )

    def start(self, timeout: float = 20.0) -> UvicornServer:
        self.child.spawn([sys.executable, "-m", "deploy.server"], self.env)
        try:
            wait_http(f"{self.url}/healthz", child=self.child, timeout=timeout)
        except ProcessError:
            self.stop()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL: the replica dies without any cleanup."""
        self.child.kill()

    def stop(self, timeout: float = 15.0) -> None:
        self.child.stop(timeout)
        self.child.proc = None


def move_unannounced(server: UvicornServer, room: str, mark: str, cell: int) -> None:
    """Commit a move on `server`'s database from another process that never broadcasts it,
    then exits: what a worker or replica killed between its commit and its publish leaves."""
    code = (
        "from game import services; "
        f"services.move_play(code={room!r}, mark={mark!r}, cell={cell}, version=None)"
    )
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=server.env,
        check=True,
        timeout=60,
    )
