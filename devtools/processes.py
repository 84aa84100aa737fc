"""Child processes, one way, for everything that starts the product on this machine: the
local fleet (devtools/fleet/), the tests' replicas and workers, the benchmark and the
load test's launcher. Standard library only (the Locust venv imports it too).

Every child leads its own process group (so a gunicorn master and its workers, or a
replica and anything it forks, stop together), writes its output to a log file that
failure messages quote, and is stopped with SIGTERM, then SIGKILL for whatever is left.
Readiness is asked over HTTP (`wait_http`), never read from log lines.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parent.parent
PR_SET_PDEATHSIG = 1

# Local URLs only: never send the health checks through an HTTP proxy from the environment.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ProcessError(RuntimeError):
    """A child exited, or did not get ready, when it should have."""


# --- ports and HTTP -----------------------------------------------------------------


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


def wait_http(
    url: str, *, child: Child | None = None, timeout: float = 30.0, status: int = 200
) -> None:
    """Until `GET url` answers `status`; ProcessError (with the child's log) if `child`
    exits first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while http_status(url) != status:
        if child is not None and not child.alive:
            raise ProcessError(
                f"{child.name} exited with {child.returncode} ({child.log_path}):\n{child.tail()}"
            )
        if time.monotonic() > deadline:
            where = f" ({child.name}, {child.log_path}):\n{child.tail()}" if child else ""
            raise ProcessError(f"{url} did not answer {status} within {timeout:.0f}s{where}")
        time.sleep(0.1)


# --- processes ----------------------------------------------------------------------


def _die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to the child when the launcher dies, even by SIGKILL.

    Linux ties this to the *thread* that forked, so only a CLI's main thread uses it.
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
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        cwd: Path = ROOT,
        die_with_parent: bool = False,
    ) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            out.write(f"--- {stamp} start {self.name}: {' '.join(argv)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own session and process group: pgid == pid
                preexec_fn=_die_with_parent if die_with_parent else None,
            )
        return self

    def send(self, sig: int) -> None:
        """Signal the group leader only (gunicorn's master forwards to its workers)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def signal_group(self, sig: int) -> None:
        """Signal every process of the group, the leader's children included."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float) -> bool:
        """Wait for the leader to exit; True if it did."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self, timeout: float = 15.0, *, sig: int = signal.SIGTERM) -> None:
        """`sig` to the group, up to `timeout` for the leader to exit, then SIGKILL for
        whatever is left of the group."""
        if self.proc is None:
            return
        if self.alive:
            self.signal_group(sig)
            self.wait(timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole group: no cleanup."""
        self.signal_group(signal.SIGKILL)
        self.wait(10)

    def log_text(self) -> str:
        """Everything the child's log file holds (earlier starts included)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, chars: int = 3000) -> str:
        """The end of the log written since the last start."""
        text = self.log_text()
        return text[text.rfind("\n--- ") + 1 :][-chars:]


class Groups:
    """The process groups one launcher started: each reaped when its leader is gone, all
    killed at once when the launcher stops (gunicorn workers and other orphans included)."""

    def __init__(self, *, die_with_parent: bool = False) -> None:
        self.die_with_parent = die_with_parent
        self._pgids: set[int] = set()

    def spawn(self, child: Child, argv: Sequence[str], env: Mapping[str, str]) -> None:
        child.spawn(argv, env, die_with_parent=self.die_with_parent)
        assert child.pid is not None
        self._pgids.add(child.pid)

    def __contains__(self, child: Child) -> bool:
        return child.pid is not None and child.pid in self._pgids

    def reap(self, child: Child) -> None:
        """After `child`'s leader exited: SIGKILL anything left in its group."""
        if child.pid is not None and child.pid in self._pgids:
            if group_pids({child.pid}):
                child.signal_group(signal.SIGKILL)
            self._pgids.discard(child.pid)

    def kill_all(self, children: Sequence[Child]) -> None:
        for pgid in list(self._pgids):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        for child in children:
            child.wait(5)
        deadline = time.monotonic() + 5
        while group_pids(self._pgids) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._pgids.clear()

    def pids(self) -> set[int]:
        """Every live process of these groups."""
        return group_pids(self._pgids)
