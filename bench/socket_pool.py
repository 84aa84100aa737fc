"""The ground every `python -m bench.sockets` probe stands on: a fresh game replica
(`replica`: started by bench.servers as `make bench` starts them, PostgreSQL, RabbitMQ,
production settings) and a pool of client sockets to it (`Sockets`); `Probe`: what
every probe takes besides its own numbers.

A socket counts only once it got `welcome` and `state` (`open_socket`); with `browser`
it sends the rest of Chrome's handshake headers. The pool closes its sockets
concurrently, a bounded number at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.extensions.base import ClientExtensionFactory
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.http11 import USER_AGENT

from bench.contenders import Contender
from bench.servers import servers

GAME = Contender("game", "game", 1, "moves")
TIMEOUT = 30.0  # per socket: connect + welcome + state


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


@dataclass(frozen=True)
class Probe:
    """Where the replica logs, what goes into its environment, handshakes in flight and
    whether the client sends Chrome's headers: the same for every probe of a run."""

    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    concurrency: int = 50
    browser: bool = False

    def replica(
        self, env: dict[str, str] | None = None
    ) -> AbstractContextManager[tuple[int, psutil.Process]]:
        """A fresh game replica with this probe's environment, and `env` on top."""
        return replica(self.log_dir, {**self.env, **(env or {})})

    def sockets(self, port: int, deflate: bool) -> AbstractAsyncContextManager[Sockets]:
        return sockets(port, deflate, browser=self.browser)
