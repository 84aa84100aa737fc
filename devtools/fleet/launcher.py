"""The local fleet: N web replicas (gunicorn + uvicorn workers) behind HAProxy on one port.

    python -m devtools.fleet --replicas 3 --port 8000 [--workers K --worker-command NAME]

(the command line is cli.py here; HAProxy's config and runtime API haproxy.py)

As a library (the end-to-end tests)::

    with Fleet(replicas=2, database_url=url, log_dir=tmp_path) as fleet:
        websockets.sync.client.connect(f"{fleet.lb_ws_url}/ws/game/abc")
        fleet.kill(0)
        fleet.restart(0)

Every child (migrate, replicas, workers, HAProxy) runs in its own process group;
`stop()`, `atexit` and the CLI's signal handlers take every group down, so no child
outlives the launcher. See devtools/README.md.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ..databases import create_database, redact
from ..processes import (
    ROOT,
    Child,
    Groups,
    ProcessError,
    free_port,
    port_free,
    wait_http,
)
from . import haproxy as balancer

log = logging.getLogger("devtools.fleet")

GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"
DEFAULT_LOG_DIR = ROOT / "var" / "fleet"
DEFAULT_SETTINGS = "config.settings.local"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/tictac_fleet"
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"


class FleetError(RuntimeError):
    """The fleet could not start, or a child did not behave."""


@dataclass(eq=False)
class Replica(Child):
    """One web replica: a gunicorn master and its uvicorn worker(s) on `port`."""

    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


# --- the fleet ------------------------------------------------------------------


class Fleet:
    """N replicas behind HAProxy, plus optional worker processes. A context manager.

    Ports are free ones unless given (`port` for the load balancer, `replica_base_port`
    for web-1; web-N gets base + N - 1). `env` adds to / overrides the children's
    environment (e.g. `GRACEFUL_SHUTDOWN_SECONDS`).
    """

    def __init__(
        self,
        replicas: int = 2,
        *,
        port: int | None = None,
        replica_base_port: int | None = None,
        workers: int = 0,
        worker_command: str | None = None,
        settings: str = DEFAULT_SETTINGS,
        database_url: str = DEFAULT_DATABASE_URL,
        rabbitmq_url: str = DEFAULT_RABBITMQ_URL,
        env: Mapping[str, str] | None = None,
        log_dir: Path | str | None = None,
        haproxy: str | None = None,
        maxconn: int | None = None,
        ready_timeout: float = 60.0,
        drain_timeout: float | None = None,
        die_with_parent: bool = False,
    ) -> None:
        if replicas < 1:
            raise ValueError("a fleet needs at least one replica")
        self.log_dir = Path(log_dir) if log_dir is not None else DEFAULT_LOG_DIR
        self.lb_port = port if port is not None else free_port()
        self._fixed_ports = port is not None or replica_base_port is not None
        self.replicas: list[Replica] = [
            Replica(
                name=f"web-{i + 1}",
                log_path=self.log_dir / f"web-{i + 1}.log",
                port=(replica_base_port + i) if replica_base_port is not None else free_port(),
            )
            for i in range(replicas)
        ]
        self.worker_command = worker_command
        self.workers: list[Child] = (
            [
                Child(name=f"worker-{i + 1}", log_path=self.log_dir / f"worker-{i + 1}.log")
                for i in range(workers)
            ]
            if worker_command
            else []
        )
        self.haproxy = Child(name="haproxy", log_path=self.log_dir / "haproxy.log")
        self.haproxy_bin = haproxy
        self.config_path = self.log_dir / "haproxy.cfg"
        self.stats_socket, self._socket_dir = balancer.stats_socket_path(self.log_dir)
        self.maxconn = maxconn if maxconn is not None else balancer.default_maxconn()
        self.database_url = database_url
        self.env: dict[str, str] = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": settings,
            "DATABASE_URL": database_url,
            "RABBITMQ_URL": rabbitmq_url,
            **(env or {}),
        }
        self.ready_timeout = ready_timeout
        # gunicorn waits GRACEFUL_SHUTDOWN_SECONDS + 5 for its workers; leave room above it.
        graceful = float(self.env.get("GRACEFUL_SHUTDOWN_SECONDS", "25"))
        self.drain_timeout = drain_timeout if drain_timeout is not None else graceful + 15
        self._groups = Groups(die_with_parent=die_with_parent)
        self._started = False

    # -- addresses -----------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.lb_port

    @property
    def lb_url(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}"

    @property
    def lb_ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.lb_port}"

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> Fleet:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Fleet:
        """Migrate, start every replica, then HAProxy; return once the LB serves all of them."""
        if self._started:
            raise FleetError("fleet already started")
        try:
            binary = balancer.find(self.haproxy_bin)
        except balancer.NotInstalled as exc:
            raise FleetError(str(exc)) from None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self._fixed_ports:
            taken = [
                p for p in [self.lb_port, *(r.port for r in self.replicas)] if not port_free(p)
            ]
            if taken:
                raise FleetError(f"port(s) already in use on 127.0.0.1: {taken}")
        self._started = True
        atexit.register(self._atexit)

        try:
            create_database(self.database_url)
        except Exception as exc:  # psycopg.Error, without importing psycopg for SQLite
            raise FleetError(f"database {redact(self.database_url)}: {exc}") from exc
        self._migrate()
        for index in range(len(self.replicas)):
            self._spawn_replica(index)
        for index in range(len(self.replicas)):
            self._wait_ready(index)
        self._start_haproxy(binary)
        self._start_workers()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Drain and stop everything: SIGTERM to workers and replicas (in parallel), wait,
        then HAProxy (it carries the replicas' 1012 closes to clients until they are out).
        Whatever is still alive afterwards, or if this is interrupted, gets SIGKILL."""
        if not self._started:
            return
        try:
            deadline = time.monotonic() + (timeout if timeout is not None else self.drain_timeout)
            children: list[Child] = [*self.workers, *self.replicas]
            for child in children:
                child.send(signal.SIGTERM)
            for child in children:
                if not child.wait(deadline - time.monotonic()):
                    log.warning("%s did not exit in time; killing it", child.name)
            self.haproxy.send(signal.SIGTERM)
            self.haproxy.wait(5)
        finally:
            self._groups.kill_all([*self.workers, *self.replicas, self.haproxy])
            self._started = False
            with contextlib.suppress(FileNotFoundError):
                self.stats_socket.unlink()
            if self._socket_dir is not None:
                shutil.rmtree(self._socket_dir, ignore_errors=True)
            atexit.unregister(self._atexit)

    def _atexit(self) -> None:
        self.stop(timeout=10)

    # -- one replica ---------------------------------------------------------------

    def kill(self, index: int) -> None:
        """SIGKILL replica `index` (master and workers): it dies without any cleanup."""
        replica = self.replicas[index]
        if replica in self._groups:
            replica.kill()
            self._groups.reap(replica)
            log.info("%s killed", replica.name)

    def terminate(self, index: int, timeout: float | None = None) -> int | None:
        """Take replica `index` out of the LB, SIGTERM it and wait while it drains.

        The app closes its sockets with 1012 over its drain window; gunicorn gives it
        GRACEFUL_SHUTDOWN_SECONDS + 5. Past `timeout` (default `drain_timeout`) the replica
        is killed. Returns its exit code.
        """
        replica = self.replicas[index]
        if not replica.alive:
            return replica.returncode
        self._lb_command(f"set server {balancer.BACKEND}/{replica.name} state drain")
        started = time.monotonic()
        replica.send(signal.SIGTERM)
        if not replica.wait(timeout if timeout is not None else self.drain_timeout):
            log.warning("%s still draining after the timeout; killing it", replica.name)
            self.kill(index)
        self._groups.reap(replica)
        log.info(
            "%s stopped (exit %s) in %.1fs",
            replica.name,
            replica.returncode,
            time.monotonic() - started,
        )
        return replica.returncode

    def restart(self, index: int, *, wait_lb: bool = True) -> Replica:
        """Start replica `index` again on its port (terminating it first if it runs), wait
        until it is ready, put it back in the LB and (`wait_lb`) until HAProxy sees it UP."""
        replica = self.replicas[index]
        if replica.alive:
            self.terminate(index)
        self._groups.reap(replica)
        self._spawn_replica(index)
        self._wait_ready(index)
        self._lb_command(f"set server {balancer.BACKEND}/{replica.name} state ready")
        if wait_lb and self.haproxy.alive:
            self.wait_lb_state(replica.name, "UP")
        log.info("%s back (pid %s)", replica.name, replica.pid)
        return replica

    def rolling_restart(self) -> None:
        """One replica at a time: out of the LB, SIGTERM, drain, start, ready, back in."""
        for index in range(len(self.replicas)):
            self.terminate(index)
            self.restart(index)

    # -- HAProxy runtime view ----------------------------------------------------------

    def lb_servers(self) -> dict[str, str]:
        """HAProxy's view of each replica: `UP`, `DOWN`, `UP 1/2`, `DRAIN`, `MAINT`, ..."""
        return balancer.server_states(self.stats_socket) if self.haproxy.alive else {}

    def wait_lb_state(self, name: str, state: str, timeout: float = 15.0) -> None:
        """Wait until HAProxy reports server `name` in `state` (e.g. `UP` or `DOWN`)."""
        deadline = time.monotonic() + timeout
        seen: str | None = None
        while time.monotonic() < deadline:
            seen = self.lb_servers().get(name)
            if seen == state:
                return
            time.sleep(0.1)
        raise FleetError(f"HAProxy never reported {name} {state} (last: {seen})")

    def pids(self) -> set[int]:
        """Every live process the fleet started (gunicorn workers included)."""
        return self._groups.pids()

    # -- internals ---------------------------------------------------------------------

    def _migrate(self) -> None:
        child = Child(name="migrate", log_path=self.log_dir / "migrate.log")
        self._groups.spawn(child, [sys.executable, "manage.py", "migrate", "--noinput"], self.env)
        try:
            if not child.wait(300):
                raise FleetError("migrate took over 300 s")
        finally:
            self._groups.reap(child)
        if child.returncode != 0:
            raise FleetError(f"migrate failed ({child.log_path}):\n{child.tail()}")
        log.info("migrated %s", redact(self.database_url))

    def _spawn_replica(self, index: int) -> None:
        replica = self.replicas[index]
        env = {**self.env, "PORT": str(replica.port), "REPLICA_NAME": replica.name}
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "config.asgi:application",
            "-c",
            str(GUNICORN_CONF),
            # gunicorn.conf.py binds 0.0.0.0:$PORT for containers; on a laptop the
            # replicas stay on loopback so everything goes through the load balancer.
            "--bind",
            f"127.0.0.1:{replica.port}",
        ]
        self._groups.spawn(replica, argv, env)

    def _wait_ready(self, index: int) -> None:
        """`GET /readyz` 200: the replica reaches its database and the channel layer."""
        replica = self.replicas[index]
        try:
            wait_http(f"{replica.url}/readyz", child=replica, timeout=self.ready_timeout)
        except ProcessError as exc:
            raise FleetError(str(exc)) from None
        log.info("%s ready on %s (pid %s)", replica.name, replica.url, replica.pid)

    def render_config(self) -> str:
        """haproxy.cfg for this fleet's ports."""
        servers = [(r.name, r.port) for r in self.replicas]
        return balancer.render_config(self.maxconn, self.stats_socket, self.lb_port, servers)

    def _start_haproxy(self, binary: str) -> None:
        self.config_path.write_text(self.render_config())
        self.stats_socket.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.stats_socket.unlink()
        self._groups.spawn(self.haproxy, [binary, "-db", "-f", str(self.config_path)], self.env)
        try:
            wait_http(f"{self.lb_url}/healthz", child=self.haproxy, timeout=self.ready_timeout)
        except ProcessError as exc:
            raise FleetError(f"load balancer not answering: {exc}") from None
        # Every replica in rotation before handing the fleet over (spread from the start).
        for replica in self.replicas:
            self.wait_lb_state(replica.name, "UP", timeout=self.ready_timeout)
        log.info("haproxy on %s (pid %s)", self.lb_url, self.haproxy.pid)

    def _start_workers(self) -> None:
        if not self.workers or not self.worker_command:
            return
        for worker in self.workers:
            # Each worker serves /metrics on a port of its own (the default is one fixed
            # port, which the second worker on this host could not bind).
            env = {
                **self.env,
                "REPLICA_NAME": worker.name,
                "WORKER_METRICS_PORT": str(free_port()),
            }
            self._groups.spawn(worker, [sys.executable, "manage.py", self.worker_command], env)
            log.info("%s started (pid %s)", worker.name, worker.pid)

    def _lb_command(self, command: str) -> str:
        """One HAProxy runtime API command; '' when HAProxy is not running."""
        return balancer.command(self.stats_socket, command) if self.haproxy.alive else ""
