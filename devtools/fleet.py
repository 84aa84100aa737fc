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
import ctypes
import io
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
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from types import FrameType, TracebackType
from urllib.parse import unquote, urlsplit, urlunsplit

log = logging.getLogger("devtools.fleet")

ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"
HAPROXY_TEMPLATE = ROOT / "devtools" / "haproxy.cfg.tmpl"
DEFAULT_LOG_DIR = ROOT / "var" / "fleet"
DEFAULT_SETTINGS = "config.settings.local"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/tictac_fleet"
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
BACKEND = "app"  # the backend's name in haproxy.cfg.tmpl
POSTGRES_SCHEMES = ("postgres", "postgresql", "pgsql", "psql", "postgis")
PR_SET_PDEATHSIG = 1

# Local URLs only: never send the health checks through an HTTP proxy from the environment.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class FleetError(RuntimeError):
    """The fleet could not start, or a child did not behave."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """The HTTP status of `GET url`, or None when nothing answers."""
    try:
        with _http.open(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


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


# --- PostgreSQL ---------------------------------------------------------------


def _postgres_parts(url: str) -> tuple[str, str] | None:
    """(admin conninfo URL on the `postgres` database, database name), or None if not PostgreSQL."""
    parts = urlsplit(url)
    if parts.scheme not in POSTGRES_SCHEMES:
        return None
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise FleetError(f"DATABASE_URL names no database: {url}")
    admin = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    return admin, name


def create_database(url: str) -> bool:
    """Create the PostgreSQL database `url` names unless it exists. True if created.

    Other databases (SQLite) need nothing and return False.
    """
    parsed = _postgres_parts(url)
    if parsed is None:
        return False
    import psycopg
    from psycopg import errors, sql

    admin, name = parsed
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except errors.DuplicateDatabase:  # created concurrently
            return False
    log.info("created database %s", name)
    return True


def drop_database(url: str) -> None:
    """Drop the PostgreSQL database `url` names, closing its sessions (tests' throwaway DBs)."""
    parsed = _postgres_parts(url)
    if parsed is None:
        return
    import psycopg
    from psycopg import sql

    admin, name = parsed
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


# --- child processes ------------------------------------------------------------


def _die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to the child when the launcher dies, even by SIGKILL.

    Linux ties this to the *thread* that forked, so only the CLI (main thread) uses it.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of a pid from /proc, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (dead, waiting to be reaped by init) counts as gone."""
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def group_pids(pgids: set[int]) -> set[int]:
    """Live pids in the given process groups (gunicorn masters and their workers, ...)."""
    found: set[int] = set()
    if not pgids:
        return found
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat is not None and stat[1] in pgids and stat[0] not in ("Z", "X"):
            found.add(int(entry.name))
    return found


@dataclass(eq=False)
class Child:
    """One child process, the leader of its own process group, its output in `log_path`."""

    name: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def spawn(
        self, argv: Sequence[str], env: Mapping[str, str], *, die_with_parent: bool = False
    ) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            out.write(f"--- {stamp} fleet starts {self.name}: {' '.join(argv)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                list(argv),
                cwd=ROOT,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own session and process group: pgid == pid
                preexec_fn=_die_with_parent if die_with_parent else None,
            )

    def send(self, sig: int) -> None:
        """Signal the group leader only (gunicorn's master forwards to its workers)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> bool:
        """Wait for the leader to exit; True if it did."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            return False
        return True

    def tail(self, chars: int = 3000) -> str:
        """The end of the log written since the last start."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[text.rfind("\n--- ") + 1 :][-chars:]


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
        self._ready_path: dict[int, str] = {}
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
        """`GET /readyz` 200 (or `/healthz` 200 while the app has no /readyz)."""
        replica = self.replicas[index]
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if not replica.alive:
                raise FleetError(
                    f"{replica.name} exited with {replica.returncode} ({replica.log_path}):\n"
                    f"{replica.tail()}"
                )
            path = self._ready_path.get(index, "/readyz")
            status = http_status(replica.url + path)
            if status == 200:
                log.info("%s ready on %s (pid %s)", replica.name, replica.url, replica.pid)
                return
            if status == 404 and path == "/readyz":
                log.warning("%s has no /readyz; falling back to /healthz", replica.name)
                self._ready_path[index] = "/healthz"
                continue
            time.sleep(0.2)
        raise FleetError(
            f"{replica.name} not ready after {self.ready_timeout:.0f}s ({replica.log_path}):\n"
            f"{replica.tail()}"
        )

    def render_config(self) -> str:
        """haproxy.cfg from devtools/haproxy.cfg.tmpl for this fleet's ports."""
        servers = "\n".join(f"    server {r.name} 127.0.0.1:{r.port}" for r in self.replicas)
        # /readyz, unless the app does not have it yet (then /healthz: alive is all we know).
        check_path = "/healthz" if "/healthz" in self._ready_path.values() else "/readyz"
        return Template(HAPROXY_TEMPLATE.read_text()).substitute(
            maxconn=self.maxconn,
            stats_socket=self.stats_socket,
            bind=f"127.0.0.1:{self.lb_port}",
            check_path=check_path,
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
    return parser.parse_args(argv)


class _Stop(Exception):
    """SIGTERM to the launcher: leave the `with` block the way Ctrl-C does."""


@dataclass
class _Requests:
    rolling: bool = False


def _watch(fleet: Fleet, requests: _Requests) -> None:
    """Report replicas that die, roll on SIGHUP, give up if HAProxy dies."""
    reported: set[str] = set()
    while True:
        if requests.rolling:
            requests.rolling = False
            log.info("rolling restart")
            fleet.rolling_restart()
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
            _watch(fleet, requests)
    except (KeyboardInterrupt, _Stop):
        print("fleet: stopped")
        return 0
    except FleetError as exc:
        print(f"fleet: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
