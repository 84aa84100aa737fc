"""Per-socket Python allocations in a game replica (`python -m bench.sockets --only trace`).

tracemalloc runs in the replica (PYTHONTRACEMALLOC and a SIGUSR2 handler from a temporary
sitecustomize: no hook in the app); a snapshot before and after N idle sockets, kept in
the log directory, gives the growth per socket by file, by line and by line of this
repository.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.servers import ROOT
from bench.socket_pool import Probe, settle

SITECUSTOMIZE = '''\
"""bench.sockets: dump a tracemalloc snapshot of this process on SIGUSR2."""
import os, signal, tracemalloc

def _dump(signum, frame):
    out = os.environ["BENCH_TRACEMALLOC_OUT"]
    tracemalloc.take_snapshot().dump(out + ".tmp")
    os.replace(out + ".tmp", out)

if os.environ.get("BENCH_TRACEMALLOC_OUT"):
    signal.signal(signal.SIGUSR2, _dump)
'''


@dataclass
class Site:
    where: str
    bytes_per_socket: float
    blocks_per_socket: float


@dataclass
class Trace:
    deflate_offered: bool
    sockets: int
    frames: int
    total_kib_per_socket: float
    by_file: list[Site] = field(default_factory=list)  # where the memory was allocated
    by_line: list[Site] = field(default_factory=list)  # that line, "<- who called"
    by_repo_line: list[Site] = field(default_factory=list)  # our lines, inclusive of callees


async def snapshot(proc: psutil.Process, path: Path, within: float = 120) -> tracemalloc.Snapshot:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    proc.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(os.path.exists, path):
        if time.monotonic() > deadline:
            raise RuntimeError("no tracemalloc snapshot from the replica")
        await asyncio.sleep(0.2)
    return tracemalloc.Snapshot.load(str(path))


def short(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3.11/", str(ROOT) + "/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def ours(filename: str) -> bool:
    """A file of this repository (not its virtualenv, this benchmark or the entry point)."""
    return (
        filename.startswith(str(ROOT) + "/")
        and "/.venv" not in filename
        and not filename.startswith(str(ROOT / "bench") + "/")
        and not filename.endswith("deploy/server.py")
    )


def breakdown(
    before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, sockets_n: int, top: int
) -> tuple[float, list[Site], list[Site], list[Site]]:
    """Per-socket growth by file, by line (with the repo line behind it) and by repo line."""
    sites: dict[str, dict[str, list[float]]] = {"file": {}, "line": {}, "repo": {}}
    for d in after.compare_to(before, "traceback"):
        frames = list(reversed(d.traceback))  # innermost first
        inner = frames[0]
        # The first frame outside the allocating file and asyncio: who asked for it.
        asker = next(
            (f for f in frames if f.filename != inner.filename and "/asyncio/" not in f.filename),
            None,
        )
        caller = next((f for f in frames if ours(f.filename)), None)
        via = f" <- {short(asker.filename)}:{asker.lineno}" if asker else ""
        keys = {
            "file": short(inner.filename),
            "line": f"{short(inner.filename)}:{inner.lineno}{via}",
            "repo": f"{short(caller.filename)}:{caller.lineno}" if caller else "",
        }
        for kind, key in keys.items():
            if key:
                acc = sites[kind].setdefault(key, [0.0, 0.0])
                acc[0] += d.size_diff
                acc[1] += d.count_diff

    def ranked(kind: str) -> list[Site]:
        rows = sorted(sites[kind].items(), key=lambda kv: -abs(kv[1][0]))[:top]
        return [
            Site(where, size / sockets_n, count / sockets_n)
            for where, (size, count) in rows
            if abs(size) / sockets_n >= 8
        ]

    total = sum(acc[0] for acc in sites["file"].values()) / sockets_n / 1024
    return total, ranked("file"), ranked("line"), ranked("repo")


async def trace(
    sockets_n: int, *, deflate: bool, probe: Probe, frames: int = 12, top: int = 30
) -> Trace:
    """Per-socket Python allocations in the replica (tracemalloc, `frames` deep)."""
    log_dir = probe.log_dir
    with tempfile.TemporaryDirectory(prefix="bench-sockets-") as tmp:
        (Path(tmp) / "sitecustomize.py").write_text(SITECUSTOMIZE)
        out = Path(tmp) / "snapshot"
        path = os.pathsep.join(p for p in (tmp, os.environ.get("PYTHONPATH", "")) if p)
        traced = {
            "PYTHONPATH": path,
            "PYTHONTRACEMALLOC": str(frames),
            "BENCH_TRACEMALLOC_OUT": str(out),
        }
        with probe.replica(traced) as (port, proc):
            async with probe.sockets(port, deflate) as pool:
                await pool.add(200, concurrency=probe.concurrency, within=120)
                await settle(proc)
                before = await snapshot(proc, out)
                os.replace(out, log_dir / "trace-before.snapshot")
                await pool.add(
                    sockets_n, concurrency=probe.concurrency, within=120 + sockets_n * 1.0
                )
                await settle(proc)
                after = await snapshot(proc, out)
                os.replace(out, log_dir / "trace-after.snapshot")
                opened = len(pool.open) - 200
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before, after = before.filter_traces(filters), after.filter_traces(filters)
    total, by_file, by_line, by_repo = breakdown(before, after, opened, top)
    return Trace(deflate, opened, frames, total, by_file, by_line, by_repo)
