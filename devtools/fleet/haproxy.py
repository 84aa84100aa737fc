"""HAProxy in front of the local fleet: its binary, its config (haproxy.cfg.tmpl beside it)
and its runtime API (the stats socket: what it thinks of each replica)."""

from __future__ import annotations

import csv
import io
import logging
import os
import resource
import shutil
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path
from string import Template

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).resolve().parent / "haproxy.cfg.tmpl"
BACKEND = "app"  # the backend's name in haproxy.cfg.tmpl


class NotInstalled(RuntimeError):
    """No HAProxy binary on this machine."""


def find(explicit: str | None = None) -> str:
    candidates = [explicit] if explicit else [shutil.which("haproxy"), "/usr/sbin/haproxy"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise NotInstalled(
        "HAProxy not found. Install Debian's package: `apt-get install haproxy` "
        "(`make fleet` installs it)."
    )


def default_maxconn(wanted: int = 10000) -> int:
    """As many connections as HAProxy can hold within the open-files limit (2 fds each)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return wanted
    return max(100, min(wanted, (hard - 200) // 2))


def stats_socket_path(log_dir: Path) -> tuple[Path, str | None]:
    """Where the stats socket goes, and the temporary directory made for it (if any):
    AF_UNIX paths are limited to 108 bytes, and a test's log dir can be longer."""
    path = log_dir.resolve() / "haproxy.sock"
    if len(os.fsencode(path)) < 100:
        return path, None
    directory = tempfile.mkdtemp(prefix="fleet-")
    return Path(directory) / "haproxy.sock", directory


def render_config(
    maxconn: int, stats_socket: Path, port: int, servers: Sequence[tuple[str, int]]
) -> str:
    """haproxy.cfg from the template: the balancer on 127.0.0.1:`port`, one server each."""
    lines = "\n".join(f"    server {name} 127.0.0.1:{server_port}" for name, server_port in servers)
    return Template(TEMPLATE.read_text()).substitute(
        maxconn=maxconn, stats_socket=stats_socket, bind=f"127.0.0.1:{port}", servers=lines
    )


def command(stats_socket: Path, line: str) -> str:
    """One runtime API command over the stats socket; '' when it is not there."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(str(stats_socket))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        log.warning("haproxy runtime API (%s): %s", line, exc)
        return ""
    return b"".join(chunks).decode(errors="replace")


def server_states(stats_socket: Path) -> dict[str, str]:
    """Each server's status as HAProxy sees it: `UP`, `DOWN`, `UP 1/2`, `DRAIN`, `MAINT`, ..."""
    text = command(stats_socket, "show stat")
    if not text:
        return {}
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    return {
        row["svname"]: row["status"]
        for row in rows
        if row.get("pxname") == BACKEND and row.get("svname") not in ("BACKEND", None)
    }
