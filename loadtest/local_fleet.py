"""The local fleet under the swarm: `python -m devtools.fleet` with the APP's virtualenv.

N replicas behind HAProxy on one port (8000 when free), ready once the launcher's
`--status-file` says `ready` and `/readyz` answers 200 through the balancer; a rolling
restart is a SIGHUP to the launcher (devtools/README.md), done when the status file
counts it. The launcher and this module share only the standard library and devtools/.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from devtools.fleet.cli import Status
from devtools.processes import free_port, http_status, port_free

from .local_procs import ROOT, Proc, RunError

APP_PYTHON = ROOT / ".venv" / "bin" / "python"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/tictac_loadtest"


@dataclass
class LocalFleet:
    """The fleet launcher (once started), its readiness and its one rolling restart."""

    args: argparse.Namespace
    log_dir: Path
    proc: Proc | None = None
    port: int = 0
    drain_started: float | None = None
    drain_done: float | None = None

    @property
    def status_path(self) -> Path:
        """The launcher's `--status-file`: ready, rolling restarts done."""
        return self.log_dir / "status.json"

    @property
    def host(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def drain_s(self) -> float | None:
        """How long the rolling restart took (None: not asked for, or not done)."""
        if self.drain_started is None or self.drain_done is None:
            return None
        return round(self.drain_done - self.drain_started, 1)

    def start(self) -> Proc:
        """Launch it (`wait_ready` follows): the process to stop whatever happens next."""
        args = self.args
        port = args.port
        if port is None:
            port = 8000 if port_free(8000) else free_port()
        elif not port_free(port):
            raise RunError(f"port {port} is taken on 127.0.0.1 (is `make fleet` running?)")
        if not Path(args.app_python).exists():
            raise RunError(f"{args.app_python} not found: run `make setup` first")
        argv = [
            str(args.app_python),
            "-m",
            "devtools.fleet",
            "--replicas",
            str(args.replicas),
            "--port",
            str(port),
            "--database-url",
            args.database_url,
            "--log-dir",
            str(self.log_dir),
            "--status-file",
            str(self.status_path),
        ]
        if not _ports_free(port + 1, args.replicas):  # replicas default to port+1 ... port+N
            argv += ["--replica-base-port", str(_free_block(args.replicas))]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
        # The whole swarm comes from this machine's one address.
        env.setdefault("MAX_SOCKETS_PER_ADDRESS", "100000")
        self.proc = Proc("fleet", argv, self.log_dir / "launcher.log", env).start()
        self.port = port
        print(f"fleet: {args.replicas} replicas behind HAProxy on {self.host} (starting)")
        return self.proc

    def wait_ready(self) -> None:
        proc = self.proc
        assert proc is not None, "start() first"
        timeout = self.args.fleet_timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RunError(f"the fleet exited:\n{proc.tail()}")
            # The launcher says `ready` once every replica is UP in HAProxy.
            if (
                Status.read(self.status_path).get("state") == "ready"
                and http_status(f"http://127.0.0.1:{self.port}/readyz", timeout=2.0) == 200
            ):
                print(f"fleet: ready (launcher pid {proc.pid}, logs {self.log_dir})")
                return
            time.sleep(0.3)
        raise RunError(f"the fleet was not ready within {timeout:.0f}s:\n{proc.tail()}")

    def rolling_restart(self) -> None:
        """SIGHUP: the launcher drains and restarts one replica at a time (devtools/README.md)."""
        if self.proc is None or not self.proc.alive():
            return
        self.drain_started = time.monotonic()
        print(f"drain: rolling restart of the fleet ({time.strftime('%H:%M:%S')})")
        self.proc.send(signal.SIGHUP)

    def watch_drain(self) -> None:
        if self.drain_started is None or self.drain_done is not None or self.proc is None:
            return
        if Status.read(self.status_path).get("rolls_done", 0) >= 1:
            self.drain_done = time.monotonic()
            print(f"drain: rolling restart done in {self.drain_done - self.drain_started:.1f}s")

    def stop(self) -> None:
        """SIGTERM: the launcher drains every replica; SIGKILL its group after the timeout."""
        if self.proc is None:
            return
        if self.proc.alive():
            print("fleet: stopping (drain)")
        self.proc.stop(timeout=self.args.fleet_stop_timeout)


def _ports_free(first: int, count: int) -> bool:
    return all(port_free(first + i) for i in range(count))


def _free_block(count: int) -> int:
    """A base port with `count` free ports from it (the replicas' ports)."""
    for _ in range(50):
        base = free_port()
        if base + count < 65535 and _ports_free(base, count):
            return base
    raise RunError("no block of free ports for the replicas")
