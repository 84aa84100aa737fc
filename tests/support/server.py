"""Real replicas (`python -m deploy.server`) for end-to-end tests: free ports, clean shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from devtools.fleet import free_port

ROOT = Path(__file__).resolve().parents[2]


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
        self.log_path = (log_dir or Path("/tmp")) / f"uvicorn-{name}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=self.env,
            check=True,
        )

    def start(self, timeout: float = 20.0) -> UvicornServer:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "deploy.server"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"{self.name} did not become healthy: {self.log_path.read_text()[-2000:]}"
        )

    def kill(self) -> None:
        """SIGKILL: the replica dies without any cleanup."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None
