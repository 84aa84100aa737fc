"""`python -m bench.sockets`: what one open WebSocket costs a game replica.

One game replica started as `make bench` starts them (`bench.fanout.servers`: PostgreSQL,
RabbitMQ, production settings), a fresh one for each measurement (`--only`, default
`idle,connects`):

- `idle`: replica RSS growth per socket over N idle sockets (`--sockets`, default 10,000,
  one room each) after a warm-up of 200, (a) with the client offering permessage-deflate
  as browsers do (`permessage-deflate; client_max_window_bits`) and (b) without the offer
  (`idle-deflate`, `idle-plain`: one of them);
- `connects`: M sockets (`--connects`, default 2,000) opened `--concurrency` (50) at a
  time on a warmed-up replica: sockets/s and replica CPU per connect, the presence
  broadcast each connect schedules included (`connects-deflate`, `connects-plain`);
- `trace`: a tracemalloc breakdown per idle socket by file, by line and by line of this
  repository, taken in the replica (PYTHONTRACEMALLOC and a SIGUSR2 handler from a
  temporary sitecustomize: no hook in the app; the snapshots stay in the log directory);
- `wire`: the bytes a spectator receives during one game under each permessage-deflate
  setting, the zlib memory each keeps per idle socket and its CPU per frame.

A socket counts only once it got `welcome` and `state`. `--browser-headers` adds the rest
of Chrome's handshake headers (the server keeps them in every socket's scope); `--env
KEY=VALUE` goes to the replica. Everything stays on 127.0.0.1, bounded in count and time;
all sockets are closed at the end, concurrently, a bounded number at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.extensions.base import ClientExtensionFactory
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)
from websockets.frames import Frame, Opcode
from websockets.http11 import USER_AGENT

from bench.fanout import RESULTS, ROOT, Contender, servers

GAME = Contender("game", "game", 1, "moves")
TIMEOUT = 30.0  # per socket: connect + welcome + state


# --- the client -----------------------------------------------------------------------


def offer(deflate: bool) -> list[ClientExtensionFactory] | None:
    """What Chrome and Firefox offer: `permessage-deflate; client_max_window_bits`."""
    return [ClientPerMessageDeflateFactory()] if deflate else None


CHROME_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/131.0.0.0 Safari/537.36"
)


def browser_headers(port: int) -> list[tuple[str, str]]:
    """The rest of what Chrome sends in a WebSocket handshake (no cookie)."""
    return [
        ("Pragma", "no-cache"),
        ("Cache-Control", "no-cache"),
        ("Origin", f"http://127.0.0.1:{port}"),
        ("Accept-Encoding", "gzip, deflate, br, zstd"),
        ("Accept-Language", "en-US,en;q=0.9"),
    ]


async def open_socket(
    port: int, deflate: bool, room: str | None = None, *, browser: bool = False
) -> ClientConnection:
    """A socket that got `welcome` and `state`; `browser`: with Chrome's headers."""
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/ws/game/{room or 'i' + uuid.uuid4().hex[:12]}",
        compression=None,
        extensions=offer(deflate),
        additional_headers=browser_headers(port) if browser else None,
        user_agent_header=CHROME_UA if browser else USER_AGENT,
        proxy=None,
        ping_interval=None,
        open_timeout=TIMEOUT,
        close_timeout=2,
        max_size=None,
    )
    try:
        async with asyncio.timeout(TIMEOUT):
            welcome, state = await ws.recv(), await ws.recv()
        if '"type":"welcome"' not in str(welcome) or '"type":"state"' not in str(state):
            raise RuntimeError(f"unexpected first frames: {welcome!r} {state!r}")
    except BaseException:
        ws.transport.abort()
        raise
    return ws


class Sockets:
    """Sockets opened to one replica; `close()` closes them all, a bounded number at a time."""

    def __init__(self, port: int, deflate: bool, *, browser: bool = False) -> None:
        self.port = port
        self.deflate = deflate
        self.browser = browser
        self.open: list[ClientConnection] = []
        self.failed = 0
        self.errors: list[str] = []

    async def add(
        self,
        count: int,
        *,
        concurrency: int,
        within: float,
        max_failures: int = 10,
        progress: Callable[[int], None] | None = None,
    ) -> float:
        """Open `count` more sockets, `concurrency` in flight; return the seconds it took."""
        left = count
        done = 0

        async def worker() -> None:
            nonlocal left, done
            while left > 0:
                left -= 1
                try:
                    self.open.append(
                        await open_socket(self.port, self.deflate, browser=self.browser)
                    )
                except (OSError, TimeoutError, websockets.WebSocketException, RuntimeError) as exc:
                    self.failed += 1
                    self.errors.append(repr(exc))
                    if self.failed > max_failures:
                        raise RuntimeError(
                            f"{self.failed} sockets failed: {self.errors[-3:]}"
                        ) from None
                    continue
                done += 1
                if progress is not None:
                    progress(done)

        start = time.perf_counter()
        async with asyncio.timeout(within), asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, count)):
                group.create_task(worker())
        return time.perf_counter() - start

    def negotiated(self) -> str:
        if not self.open or self.open[0].response is None:
            return "-"
        return self.open[0].response.headers.get("Sec-WebSocket-Extensions", "none")

    async def close(self, concurrency: int = 200, within: float = 60.0) -> None:
        conns, self.open = self.open, []
        gate = asyncio.Semaphore(concurrency)

        async def one(ws: ClientConnection) -> None:
            async with gate:
                with contextlib.suppress(Exception):
                    await ws.close()

        try:
            async with asyncio.timeout(within):
                await asyncio.gather(*(one(ws) for ws in conns))
        except TimeoutError:
            for ws in conns:
                ws.transport.abort()


@asynccontextmanager
async def sockets(port: int, deflate: bool, *, browser: bool = False) -> AsyncIterator[Sockets]:
    pool = Sockets(port, deflate, browser=browser)
    try:
        yield pool
    finally:
        await pool.close()


# --- the replica ----------------------------------------------------------------------


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


async def settle(proc: psutil.Process, *, busy: float = 0.03, max_wait: float = 20.0) -> None:
    """Wait until the replica uses under `busy` of a core for half a second."""
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        before = cpu_seconds(proc)
        await asyncio.sleep(0.5)
        if cpu_seconds(proc) - before < busy * 0.5:
            return


def rss(proc: psutil.Process) -> int:
    return int(proc.memory_info().rss)


def progress_printer(total: int, label: str) -> Callable[[int], None]:
    step = max(1000, total // 10)

    def show(done: int) -> None:
        if done % step == 0 or done == total:
            print(f"  {label}: {done}/{total}", flush=True)

    return show


@contextmanager
def replica(log_dir: Path, env: dict[str, str]) -> Iterator[tuple[int, psutil.Process]]:
    contender = Contender(GAME.name, GAME.app, 1, GAME.mode, {**GAME.env, **env})
    with servers(contender, log_dir) as procs:
        port, pid = procs[0]
        yield port, psutil.Process(pid)


# --- the measurements -----------------------------------------------------------------


@dataclass
class Idle:
    deflate_offered: bool
    sockets: int
    negotiated: str
    rss_before_mib: float
    rss_after_mib: float
    kib_per_socket: float
    failed: int


@dataclass
class Connects:
    deflate_offered: bool
    sockets: int
    concurrency: int
    seconds: float
    per_second: float
    cpu_ms_per_connect: float
    failed: int


async def idle_memory(
    sockets_n: int,
    *,
    deflate: bool,
    log_dir: Path,
    env: dict[str, str] | None = None,
    warmup: int = 200,
    concurrency: int = 50,
    browser: bool = False,
) -> Idle:
    """RSS growth of a fresh replica per idle socket (each waited for welcome and state)."""
    with replica(log_dir, env or {}) as (port, proc):
        async with sockets(port, deflate, browser=browser) as pool:
            await pool.add(warmup, concurrency=concurrency, within=120)
            await settle(proc)
            before = rss(proc)
            await pool.add(
                sockets_n,
                concurrency=concurrency,
                within=120 + sockets_n * 0.2,
                progress=progress_printer(sockets_n, f"idle, deflate {'on' if deflate else 'off'}"),
            )
            await settle(proc)
            after = rss(proc)
            opened = len(pool.open) - warmup
            return Idle(
                deflate_offered=deflate,
                sockets=opened,
                negotiated=pool.negotiated(),
                rss_before_mib=before / 2**20,
                rss_after_mib=after / 2**20,
                kib_per_socket=(after - before) / opened / 1024,
                failed=pool.failed,
            )


async def connect_rate(
    sockets_n: int,
    *,
    deflate: bool,
    log_dir: Path,
    env: dict[str, str] | None = None,
    concurrency: int = 50,
    browser: bool = False,
    warmup: int = 200,
) -> Connects:
    """Open `sockets_n` sockets, `concurrency` in flight, on a fresh, warmed-up replica.

    CPU is counted until the replica is quiet again, so the presence broadcast each
    connect schedules is part of its cost."""
    with replica(log_dir, env or {}) as (port, proc):
        async with sockets(port, deflate, browser=browser) as warm:
            await warm.add(warmup, concurrency=concurrency, within=120)
            async with sockets(port, deflate, browser=browser) as pool:
                await settle(proc)
                cpu0 = cpu_seconds(proc)
                seconds = await pool.add(
                    sockets_n, concurrency=concurrency, within=120 + sockets_n * 0.2
                )
                await settle(proc)
                cpu = cpu_seconds(proc) - cpu0
                opened = len(pool.open)
                return Connects(
                    deflate_offered=deflate,
                    sockets=opened,
                    concurrency=concurrency,
                    seconds=seconds,
                    per_second=opened / seconds,
                    cpu_ms_per_connect=cpu / opened * 1000,
                    failed=pool.failed,
                )


# --- tracemalloc in the replica -------------------------------------------------------

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
        and not filename.endswith(("bench/sockets.py", "deploy/server.py"))
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
    sockets_n: int,
    *,
    deflate: bool,
    log_dir: Path,
    env: dict[str, str] | None = None,
    frames: int = 12,
    top: int = 30,
    concurrency: int = 50,
    browser: bool = False,
) -> Trace:
    """Per-socket Python allocations in the replica (tracemalloc, `frames` deep)."""
    with tempfile.TemporaryDirectory(prefix="bench-sockets-") as tmp:
        (Path(tmp) / "sitecustomize.py").write_text(SITECUSTOMIZE)
        out = Path(tmp) / "snapshot"
        path = os.pathsep.join(p for p in (tmp, os.environ.get("PYTHONPATH", "")) if p)
        traced = {
            **(env or {}),
            "PYTHONPATH": path,
            "PYTHONTRACEMALLOC": str(frames),
            "BENCH_TRACEMALLOC_OUT": str(out),
        }
        with replica(log_dir, traced) as (port, proc):
            async with sockets(port, deflate, browser=browser) as pool:
                await pool.add(200, concurrency=concurrency, within=120)
                await settle(proc)
                before = await snapshot(proc, out)
                os.replace(out, log_dir / "trace-before.snapshot")
                await pool.add(sockets_n, concurrency=concurrency, within=120 + sockets_n * 1.0)
                await settle(proc)
                after = await snapshot(proc, out)
                os.replace(out, log_dir / "trace-after.snapshot")
                opened = len(pool.open) - 200
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before, after = before.filter_traces(filters), after.filter_traces(filters)
    total, by_file, by_line, by_repo = breakdown(before, after, opened, top)
    return Trace(deflate, opened, frames, total, by_file, by_line, by_repo)


# --- bytes on the wire ----------------------------------------------------------------

# (label, permessage-deflate parameters the server could answer; None: no compression)
WIRE_SETTINGS: list[tuple[str, dict[str, Any] | None]] = [
    ("off", None),
    ("uvicorn default: window 12, memLevel 5, context takeover", {"bits": 12, "mem": 5}),
    ("window 9, memLevel 1, context takeover", {"bits": 9, "mem": 1}),
    ("window 12, memLevel 5, no context takeover", {"bits": 12, "mem": 5, "nct": True}),
    ("window 9, memLevel 1, no context takeover", {"bits": 9, "mem": 1, "nct": True}),
]


@dataclass
class Wire:
    setting: str
    frames: int
    payload_bytes: int
    wire_bytes: int  # payload + frame headers, server to client (unmasked)
    zlib_kib_per_idle_socket: float  # compressor + decompressor kept between messages
    encode_us_per_frame: float


def extension(params: dict[str, Any]) -> PerMessageDeflate:
    nct = bool(params.get("nct"))
    return PerMessageDeflate(nct, nct, params["bits"], params["bits"], {"memLevel": params["mem"]})


def header_bytes(size: int) -> int:
    return 2 if size < 126 else 4 if size < 65536 else 10


def wire_table(frames: list[str]) -> list[Wire]:
    """What each setting would put on the wire for these server-to-client frames."""
    rows = []
    raw = [f.encode() for f in frames]
    for label, params in WIRE_SETTINGS:
        if params is None:
            sizes = [len(r) for r in raw]
            rows.append(
                Wire(label, len(raw), sum(sizes), sum(s + header_bytes(s) for s in sizes), 0.0, 0.0)
            )
            continue
        tracemalloc.start()
        held = [extension(params) for _ in range(100)]  # zlib allocates through PyMem_Raw*
        kib = tracemalloc.get_traced_memory()[0] / 100 / 1024
        tracemalloc.stop()
        del held
        ext = extension(params)
        sizes = [len(ext.encode(Frame(Opcode.TEXT, r)).data) for r in raw]
        start = time.perf_counter()
        for _ in range(200):  # CPU: the same frames again, on the same socket
            for r in raw:
                ext.encode(Frame(Opcode.TEXT, r))
        took = (time.perf_counter() - start) / 200
        rows.append(
            Wire(
                label,
                len(raw),
                sum(sizes),
                sum(s + header_bytes(s) for s in sizes),
                kib,
                took / len(raw) * 1e6,
            )
        )
    return rows


async def game_frames(port: int) -> list[str]:
    """Everything a spectator receives while two players join, chat and play a game."""
    room = f"w{uuid.uuid4().hex[:10]}"
    frames: list[str] = []
    spectator = await open_socket(port, False, room)
    x = await open_socket(port, False, room)
    o = await open_socket(port, False, room)

    async def collect() -> None:
        async for frame in spectator:
            frames.append(str(frame))

    reader = asyncio.create_task(collect())
    try:
        for ws, name in ((x, "ana"), (o, "bo")):
            await ws.send(json.dumps({"type": "join", "name": name}))
            await asyncio.sleep(0.4)
        await x.send(json.dumps({"type": "chat", "text": "good luck!"}))
        await asyncio.sleep(0.2)
        for ws, cell in ((x, 0), (o, 3), (x, 1), (o, 4), (x, 2)):
            await ws.send(json.dumps({"type": "move", "cell": cell}))
            await asyncio.sleep(0.3)
        for ws in (x, o):
            await ws.send('{"type":"rematch"}')
            await asyncio.sleep(0.3)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        for ws in (spectator, x, o):
            await ws.close()
    return frames


async def wire(log_dir: Path, env: dict[str, str] | None = None) -> tuple[list[str], list[Wire]]:
    with replica(log_dir, env or {}) as (port, _):
        frames = await game_frames(port)
    return frames, wire_table(frames)


# --- all of it ------------------------------------------------------------------------


@dataclass
class Report:
    idle: list[Idle] = field(default_factory=list)
    connects: list[Connects] = field(default_factory=list)
    trace: Trace | None = None
    wire: list[Wire] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    browser_headers: bool = False


async def measure(
    *,
    sockets_n: int = 10_000,
    connects_n: int = 2_000,
    concurrency: int = 50,
    log_dir: Path | None = None,
    env: dict[str, str] | None = None,
    parts: tuple[str, ...] = ("idle", "connects"),
    trace_sockets: int = 2_000,
    trace_deflate: bool = True,
    trace_frames: int = 12,
    browser: bool = False,
) -> Report:
    """Run the chosen parts ("idle", "idle-deflate", "idle-plain", "connects",
    "connects-deflate", "connects-plain", "trace", "wire"), each on a fresh replica, with
    `env` added to the replica's environment."""
    env = env or {}
    log_dir = log_dir or RESULTS / "logs" / f"sockets-{time.strftime('%Y%m%d-%H%M%S')}"
    log_dir.mkdir(parents=True, exist_ok=True)
    report = Report(env=env, browser_headers=browser)
    for deflate, part in ((True, "idle-deflate"), (False, "idle-plain")):
        if "idle" in parts or part in parts:
            idle = await idle_memory(
                sockets_n,
                deflate=deflate,
                log_dir=log_dir,
                env=env,
                concurrency=concurrency,
                browser=browser,
            )
            print(f"  {idle}", flush=True)
            report.idle.append(idle)
    for deflate, part in ((True, "connects-deflate"), (False, "connects-plain")):
        if "connects" in parts or part in parts:
            rate = await connect_rate(
                connects_n,
                deflate=deflate,
                log_dir=log_dir,
                env=env,
                concurrency=concurrency,
                browser=browser,
            )
            print(f"  {rate}", flush=True)
            report.connects.append(rate)
    if "trace" in parts:
        report.trace = await trace(
            trace_sockets,
            deflate=trace_deflate,
            log_dir=log_dir,
            env=env,
            frames=trace_frames,
            concurrency=concurrency,
            browser=browser,
        )
    if "wire" in parts:
        _, report.wire = await wire(log_dir, env)
    return report


def table(report: Report) -> str:
    lines = []
    if report.env:
        lines += ["replica env: " + " ".join(f"{k}={v}" for k, v in report.env.items()), ""]
    if report.browser_headers:
        lines += ["client: Chrome's handshake headers (User-Agent, Origin, Accept-*, ...)", ""]
    if report.idle or report.connects:
        cols = [("deflate offered", True), ("not offered", False)]
        idle = {i.deflate_offered: i for i in report.idle}
        conn = {c.deflate_offered: c for c in report.connects}
        lines += ["| one game replica | deflate offered | not offered |", "|---|---|---|"]

        def row(label: str, cell: Callable[[bool], str]) -> None:
            lines.append(f"| {label} | " + " | ".join(cell(d) for _, d in cols) + " |")

        if idle:
            row(
                "idle KiB per socket",
                lambda d: f"{idle[d].kib_per_socket:.1f}" if d in idle else "",
            )
            row(
                "idle sockets, RSS MiB",
                lambda d: (
                    f"{idle[d].sockets}, {idle[d].rss_before_mib:.0f}"
                    f" -> {idle[d].rss_after_mib:.0f}"
                    if d in idle
                    else ""
                ),
            )
            row("negotiated", lambda d: f"`{idle[d].negotiated}`" if d in idle else "")
        if conn:
            row(
                f"connects/s ({next(iter(conn.values())).concurrency} in flight)",
                lambda d: f"{conn[d].per_second:.0f} ({conn[d].sockets})" if d in conn else "",
            )
            row(
                "replica CPU ms per connect",
                lambda d: f"{conn[d].cpu_ms_per_connect:.2f}" if d in conn else "",
            )
        failed = sum(i.failed for i in report.idle) + sum(c.failed for c in report.connects)
        if failed:
            lines.append(f"\n{failed} sockets failed to open")
    if report.trace:
        t = report.trace
        lines += [
            "",
            f"tracemalloc in the replica, {t.sockets} idle sockets, deflate"
            f" {'offered' if t.deflate_offered else 'not offered'}:"
            f" {t.total_kib_per_socket:.2f} KiB of Python allocations per socket"
            f" ({t.frames} frames deep)",
            "",
            "| file | bytes/socket | blocks/socket |",
            "|---|---|---|",
            *(
                f"| {s.where} | {s.bytes_per_socket:.0f} | {s.blocks_per_socket:.1f} |"
                for s in t.by_file
            ),
            "",
            "| line (<- the first caller outside that file and asyncio)"
            " | bytes/socket | blocks/socket |",
            "|---|---|---|",
            *(
                f"| {s.where} | {s.bytes_per_socket:.0f} | {s.blocks_per_socket:.1f} |"
                for s in t.by_line
            ),
            "",
            "| repo line (everything allocated under it) | bytes/socket | blocks/socket |",
            "|---|---|---|",
            *(
                f"| {s.where} | {s.bytes_per_socket:.0f} | {s.blocks_per_socket:.1f} |"
                for s in t.by_repo_line
            ),
        ]
    if report.wire:
        lines += [
            "",
            "server-to-client bytes for one spectator during a game"
            f" ({report.wire[0].frames} frames)",
            "",
            "| permessage-deflate | payload bytes | wire bytes | zlib KiB kept per idle socket"
            " | encode us/frame |",
            "|---|---|---|---|---|",
            *(
                f"| {w.setting} | {w.payload_bytes} | {w.wire_bytes} |"
                f" {w.zlib_kib_per_idle_socket:.1f} | {w.encode_us_per_frame:.0f} |"
                for w in report.wire
            ),
        ]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sockets", type=int, default=10_000, help="idle sockets (default 10,000)")
    parser.add_argument("--connects", type=int, default=2_000, help="sockets for the connect rate")
    parser.add_argument("--concurrency", type=int, default=50, help="handshakes in flight")
    parser.add_argument(
        "--only",
        default="idle,connects",
        help="comma-separated: idle, idle-deflate, idle-plain, connects, connects-deflate,"
        " connects-plain, trace, wire",
    )
    parser.add_argument("--trace-sockets", type=int, default=2_000)
    parser.add_argument("--trace-frames", type=int, default=12, help="tracemalloc depth")
    parser.add_argument(
        "--trace-plain", action="store_true", help="trace without the deflate offer"
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="replica environment"
    )
    parser.add_argument(
        "--browser-headers",
        action="store_true",
        help="send Chrome's handshake headers too (the server keeps them in each scope)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    report = await measure(
        sockets_n=args.sockets,
        connects_n=args.connects,
        concurrency=args.concurrency,
        env=env,
        parts=tuple(p for p in args.only.split(",") if p),
        trace_sockets=args.trace_sockets,
        trace_deflate=not args.trace_plain,
        trace_frames=args.trace_frames,
        browser=args.browser_headers,
    )
    print("\n" + table(report))
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=1))


if __name__ == "__main__":
    import uvloop

    # SIGTERM unwinds like Ctrl-C, so the replica and its database are cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1:] * 2)
    uvloop.run(main())
