"""The local fleet: N web replicas (gunicorn + uvicorn workers) behind HAProxy on one port.

    python -m devtools.fleet --replicas 3 --port 8000 [--workers K --worker-command NAME]

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

import argparse
import atexit
import contextlib
import csv
import io
import json
import logging
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .databases import create_database
from .processes import (
    ROOT,
    Child,
    ProcessError,
    free_port,
    group_pids,
    http_status,
    port_free,
    wait_http,
)

log = logging.getLogger("devtools.fleet")

GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"
HAPROXY_TEMPLATE = ROOT / "devtools" / "haproxy.cfg.tmpl"
DEFAULT_LOG_DIR = ROOT / "var" / "fleet"
DEFAULT_SETTINGS = "config.settings.local"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/tictac_fleet"
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
BACKEND = "app"  # the backend's name in haproxy.cfg.tmpl


class FleetError(RuntimeError):
    """The fleet could not start, or a child did not behave."""


def default_maxconn(wanted: int = 10000) -> int:
    """As many connections as HAProxy can hold within the open-files limit (2 fds each)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return wanted
    return max(100, min(wanted, (hard - 200) // 2))


def find_haproxy(explicit: str | None = None) -> str:
    candidates = [explicit] if explicit else [shutil.which("haproxy"), "/usr/sbin/haproxy"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise FleetError(
        "HAProxy not found. Install Debian's package: `apt-get install haproxy` "
        "(`make fleet` installs it)."
    )


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
        self._socket_dir: str | None = None
        self.stats_socket = self._stats_socket_path()
        self.maxconn = maxconn if maxconn is not None else default_maxconn()
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
        self.die_with_parent = die_with_parent
        self._groups: set[int] = set()
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
        haproxy = find_haproxy(self.haproxy_bin)
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
            raise FleetError(f"database {_redact(self.database_url)}: {exc}") from exc
        self._migrate()
        for index in range(len(self.replicas)):
            self._spawn_replica(index)
        for index in range(len(self.replicas)):
            self._wait_ready(index)
        self._start_haproxy(haproxy)
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
            self._kill_groups()
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
        if replica.pid is not None and replica.pid in self._groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(replica.pid, signal.SIGKILL)
            replica.wait(10)
            self._reap_group(replica)
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
        self._lb_command(f"set server {BACKEND}/{replica.name} state drain")
        started = time.monotonic()
        replica.send(signal.SIGTERM)
        if not replica.wait(timeout if timeout is not None else self.drain_timeout):
            log.warning("%s still draining after the timeout; killing it", replica.name)
            self.kill(index)
        self._reap_group(replica)
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
        self._reap_group(replica)
        self._spawn_replica(index)
        self._wait_ready(index)
        self._lb_command(f"set server {BACKEND}/{replica.name} state ready")
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
        text = self._lb_command("show stat")
        if not text:
            return {}
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row.get("pxname") == BACKEND and row.get("svname") not in ("BACKEND", None)
        }

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
        return group_pids(self._groups)

    # -- internals ---------------------------------------------------------------------

    def _stats_socket_path(self) -> Path:
        path = self.log_dir.resolve() / "haproxy.sock"
        if len(os.fsencode(path)) < 100:  # AF_UNIX paths are limited to 108 bytes
            return path
        self._socket_dir = tempfile.mkdtemp(prefix="fleet-")
        return Path(self._socket_dir) / "haproxy.sock"

    def _spawn(self, child: Child, argv: Sequence[str], env: Mapping[str, str]) -> None:
        child.spawn(argv, env, die_with_parent=self.die_with_parent)
        assert child.pid is not None
        self._groups.add(child.pid)

    def _migrate(self) -> None:
        child = Child(name="migrate", log_path=self.log_dir / "migrate.log")
        self._spawn(child, [sys.executable, "manage.py", "migrate", "--noinput"], self.env)
        try:
            if not child.wait(300):
                raise FleetError("migrate took over 300 s")
        finally:
            self._reap_group(child)
        if child.returncode != 0:
            raise FleetError(f"migrate failed ({child.log_path}):\n{child.tail()}")
        log.info("migrated %s", _redact(self.database_url))

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
        self._spawn(replica, argv, env)

    def _wait_ready(self, index: int) -> None:
        """`GET /readyz` 200: the replica reaches its database and the channel layer."""
        replica = self.replicas[index]
        try:
            wait_http(f"{replica.url}/readyz", child=replica, timeout=self.ready_timeout)
        except ProcessError as exc:
            raise FleetError(str(exc)) from None
        log.info("%s ready on %s (pid %s)", replica.name, replica.url, replica.pid)

    def render_config(self) -> str:
        """haproxy.cfg from devtools/haproxy.cfg.tmpl for this fleet's ports."""
        servers = "\n".join(f"    server {r.name} 127.0.0.1:{r.port}" for r in self.replicas)
        return Template(HAPROXY_TEMPLATE.read_text()).substitute(
            maxconn=self.maxconn,
            stats_socket=self.stats_socket,
            bind=f"127.0.0.1:{self.lb_port}",
            servers=servers,
        )

    def _start_haproxy(self, haproxy: str) -> None:
        self.config_path.write_text(self.render_config())
        self.stats_socket.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.stats_socket.unlink()
        self._spawn(self.haproxy, [haproxy, "-db", "-f", str(self.config_path)], self.env)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if not self.haproxy.alive:
                raise FleetError(
                    f"haproxy exited with {self.haproxy.returncode} ({self.haproxy.log_path}):\n"
                    f"{self.haproxy.tail()}"
                )
            if http_status(f"{self.lb_url}/healthz") == 200:
                break
            time.sleep(0.2)
        else:
            raise FleetError(f"load balancer not answering on {self.lb_url}/healthz")
        # Every replica in rotation before handing the fleet over (spread from the start).
        for replica in self.replicas:
            self.wait_lb_state(replica.name, "UP", timeout=self.ready_timeout)
        log.info("haproxy on %s (pid %s)", self.lb_url, self.haproxy.pid)

    def _start_workers(self) -> None:
        if not self.workers or not self.worker_command:
            return
        probe = subprocess.run(
            [sys.executable, "manage.py", "help", self.worker_command],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            check=False,
        )
        if probe.returncode != 0:
            log.warning("no management command %r; starting no workers", self.worker_command)
            self.workers = []
            return
        for worker in self.workers:
            # Each worker serves /metrics on a port of its own (the default is one fixed
            # port, which the second worker on this host could not bind).
            env = {
                **self.env,
                "REPLICA_NAME": worker.name,
                "WORKER_METRICS_PORT": str(free_port()),
            }
            self._spawn(worker, [sys.executable, "manage.py", self.worker_command], env)
            log.info("%s started (pid %s)", worker.name, worker.pid)

    def _lb_command(self, command: str) -> str:
        """One HAProxy runtime API command over the stats socket; '' when it is not there."""
        if not self.haproxy.alive:
            return ""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2.0)
                sock.connect(str(self.stats_socket))
                sock.sendall(command.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            log.warning("haproxy runtime API (%s): %s", command, exc)
            return ""
        return b"".join(chunks).decode(errors="replace")

    def _reap_group(self, child: Child) -> None:
        """After a leader exited: SIGKILL anything left in its group (orphaned workers)."""
        pgid = child.pid
        if pgid is None or pgid not in self._groups:
            return
        if group_pids({pgid}):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        self._groups.discard(pgid)

    def _kill_groups(self) -> None:
        for pgid in list(self._groups):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        for child in [*self.workers, *self.replicas, self.haproxy]:
            child.wait(5)
        deadline = time.monotonic() + 5
        while group_pids(self._groups) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._groups.clear()


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


# --- CLI ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.fleet",
        description="N web replicas behind HAProxy on one port. Ctrl-C drains and stops all; "
        "SIGHUP does a rolling restart.",
    )
    parser.add_argument("--replicas", type=int, default=3, help="web replicas (default 3)")
    parser.add_argument("--port", type=int, default=8000, help="load balancer port (8000)")
    parser.add_argument(
        "--replica-base-port",
        type=int,
        default=None,
        help="port of web-1, web-N on base+N-1 (default: --port + 1)",
    )
    parser.add_argument("--workers", type=int, default=0, help="worker processes (default 0)")
    parser.add_argument(
        "--worker-command",
        default=None,
        help="management command the workers run; without it --workers is ignored",
    )
    parser.add_argument(
        "--settings",
        default=os.environ.get("DJANGO_SETTINGS_MODULE", DEFAULT_SETTINGS),
        help="DJANGO_SETTINGS_MODULE (default: the environment's, else config.settings.local)",
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--rabbitmq-url", default=DEFAULT_RABBITMQ_URL)
    parser.add_argument("--log-dir", type=Path, default=DEFAULT_LOG_DIR)
    parser.add_argument(
        "--maxconn", type=int, default=None, help="HAProxy maxconn (default: fits ulimit -n)"
    )
    parser.add_argument(
        "--status-file",
        type=Path,
        default=None,
        help="keep a JSON status here for scripts: state (starting, ready, rolling, stopped),"
        " the balancer's URL, rolling restarts done",
    )
    return parser.parse_args(argv)


class _Stop(Exception):
    """SIGTERM to the launcher: leave the `with` block the way Ctrl-C does."""


@dataclass
class _Requests:
    rolling: bool = False


@dataclass
class Status:
    """What the CLI tells scripts (loadtest/run_local.py) through `--status-file`: JSON,
    replaced atomically, so a reader never sees half of it."""

    path: Path | None
    state: str = "starting"
    lb_url: str = ""
    rolls_done: int = 0

    def set(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self, key, value)
        if self.path is None:
            return
        body = {"state": self.state, "lb_url": self.lb_url, "rolls_done": self.rolls_done}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(body))
        os.replace(partial, self.path)

    @staticmethod
    def read(path: Path) -> dict[str, Any]:
        """The status a launcher wrote; {} before its first write."""
        try:
            found: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return found


def _watch(fleet: Fleet, requests: _Requests, status: Status) -> None:
    """Report replicas that die, roll on SIGHUP, give up if HAProxy dies."""
    reported: set[str] = set()
    while True:
        if requests.rolling:
            requests.rolling = False
            log.info("rolling restart")
            status.set(state="rolling")
            fleet.rolling_restart()
            status.set(state="ready", rolls_done=status.rolls_done + 1)
            log.info("rolling restart done")
        if not fleet.haproxy.alive:
            raise FleetError(f"haproxy exited ({fleet.haproxy.log_path}):\n{fleet.haproxy.tail()}")
        for replica in fleet.replicas:
            if replica.alive:
                reported.discard(replica.name)
            elif replica.name not in reported:
                reported.add(replica.name)
                log.warning(
                    "%s exited with %s; see %s",
                    replica.name,
                    replica.returncode,
                    replica.log_path,
                )
        time.sleep(1)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="fleet: %(message)s", stream=sys.stdout)
    if args.workers and not args.worker_command:
        log.warning("--workers %d without --worker-command: no workers started", args.workers)
    requests = _Requests()
    status = Status(args.status_file)
    status.set(state="starting")

    def on_int(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    def on_hup(signum: int, frame: FrameType | None) -> None:
        requests.rolling = True

    # Explicitly: a shell starts background jobs with SIGINT ignored, and Python keeps that.
    signal.signal(signal.SIGINT, on_int)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    fleet = Fleet(
        args.replicas,
        port=args.port,
        replica_base_port=args.replica_base_port or args.port + 1,
        workers=args.workers,
        worker_command=args.worker_command,
        settings=args.settings,
        database_url=args.database_url,
        rabbitmq_url=args.rabbitmq_url,
        log_dir=args.log_dir,
        maxconn=args.maxconn,
        die_with_parent=True,
    )
    try:
        with fleet:
            for r in fleet.replicas:
                print(f"  {r.name:<9} pid {r.pid!s:<7} {r.url:<24} log {r.log_path}")
            for w in fleet.workers:
                print(f"  {w.name:<9} pid {w.pid!s:<7} {'':<24} log {w.log_path}")
            h = fleet.haproxy
            print(f"  {h.name:<9} pid {h.pid!s:<7} {fleet.lb_url:<24} cfg {fleet.config_path}")
            print(f"play on {fleet.lb_url}  (Ctrl-C stops all; kill -HUP {os.getpid()} rolls)")
            sys.stdout.flush()
            status.set(state="ready", lb_url=fleet.lb_url)
            _watch(fleet, requests, status)
    except (KeyboardInterrupt, _Stop):
        print("fleet: stopped")
        return 0
    except FleetError as exc:
        print(f"fleet: {exc}", file=sys.stderr)
        return 1
    finally:
        status.set(state="stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
