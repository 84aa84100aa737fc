"""Room members that behave as a good client does: they survive any close.

A `Member` (and its kinds in gameclient/player.py, `Player` and `Spectator`) follows
docs/protocol.md the way a good client does:

- connect to `<lb>/ws/game/<room>` (never through an HTTP proxy) and note the
  replica named by each connection's `welcome.server`;
- keep the `state` with the highest version, the later one on a tie;
- reconnect by themselves after *any* close (1012 drain, 1011, a dead replica's
  missing close frame, a refused connection, a 503 from the balancer) with
  jittered exponential backoff, counting reconnects and close codes;
- a player joins once, then rejoins with its token on every new connection, and
  plays a scripted list of cells: on its turn it sends `move` with the next
  scripted cell not yet on the board and the current `version`; a refused move
  (`stale_version`, `not_your_turn`, `cell_taken`, ...) is answered with `sync`.

Everything they see is logged (every state with its arrival time and replica,
every connection, every move sent and error received) for callers to check and
for failure messages to show. Run one with `start()`, wait with
`wait_finished()` or `wait_for()`, end it with `stop()`. A member that meets
something a good server never does (a seat token refused, a rejoin under
another mark) stops with `Misbehaved` in `failure`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Self

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from . import codec
from .codec import Frame

# Close "code" recorded when no connection was made at all (refused, 503, timeout).
NO_CONNECTION = -1


class Misbehaved(Exception):
    """The server did what docs/protocol.md rules out (or the member's script ran dry)."""


@dataclass
class Link:
    """One connection attempt: where it landed and how it ended."""

    opened_at: float
    server: str | None = None  # welcome.server; None when no welcome arrived
    closed_at: float | None = None
    close_code: int | None = None  # 1006 = closed without a close frame; -1 = never opened
    error: str | None = None  # why it could not be opened


@dataclass
class Seen:
    """A state as it arrived."""

    at: float
    server: str | None
    state: Frame


class Member:
    """A room member over the load balancer that reconnects after any close."""

    role = "member"

    def __init__(
        self,
        base_url: str,
        room: str,
        *,
        label: str | None = None,
        reconnect: bool = True,
        backoff_base: float = 0.1,
        backoff_cap: float = 2.0,
        placement: Callable[[str], bool] | None = None,
        placement_attempts: int = 30,
        open_timeout: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        self.url = f"{base_url}/ws/game/{room}"
        self.room = room
        self.label = label or f"{self.role}@{room}"
        self.reconnect = reconnect
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.placement = placement
        self.placement_attempts = placement_attempts
        self.open_timeout = open_timeout
        self.rng = rng or random.Random()

        self.links: list[Link] = []  # every connection attempt, in order
        self.reconnects = 0  # connection attempts after the first one that stuck
        self.placement_retries = 0  # sockets closed at once because of `placement`
        self.states: list[Seen] = []  # every state, in arrival order
        self.latest: Frame | None = None
        self.errors: Counter[str] = Counter()
        self.error_log: list[tuple[float, str]] = []
        self.messages = 0
        self.ws: ClientConnection | None = None
        self.failure: BaseException | None = None  # an unexpected exception in the loop

        self._stopping = False
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- views ------------------------------------------------------------------

    @property
    def server(self) -> str | None:
        """The replica holding the current (or last) connection."""
        for link in reversed(self.links):
            if link.server is not None:
                return link.server
        return None

    @property
    def servers(self) -> list[str]:
        """`welcome.server` of every connection, in order."""
        return [link.server for link in self.links if link.server is not None]

    @property
    def close_codes(self) -> Counter[int | None]:
        """How each connection (or attempt) ended; the last, still open one is not counted."""
        return Counter(link.close_code for link in self.links if link.closed_at is not None)

    @property
    def versions(self) -> list[int]:
        """Every distinct version seen, sorted."""
        return sorted({seen.state["version"] for seen in self.states})

    def first_seen(self) -> dict[int, float]:
        """When each version was first seen (monotonic clock)."""
        times: dict[int, float] = {}
        for seen in self.states:
            times.setdefault(seen.state["version"], seen.at)
        return times

    def state_at(self, version: int) -> Frame | None:
        """The last state seen at `version`."""
        for seen in reversed(self.states):
            if seen.state["version"] == version:
                return seen.state
        return None

    @property
    def connected(self) -> bool:
        return self.ws is not None

    def summary(self) -> str:
        latest = self.latest or {}
        return (
            f"{self.label}: servers={self.servers} reconnects={self.reconnects} "
            f"closes={dict(self.close_codes)} errors={dict(self.errors)} "
            f"version={latest.get('version')} status={latest.get('status')} "
            f"board={latest.get('board')}"
        )

    # --- running ----------------------------------------------------------------

    def start(self) -> Self:
        self._task = asyncio.create_task(self._run(), name=self.label)
        return self

    async def stop(self) -> None:
        """Close the socket normally and stop reconnecting."""
        self._stopping = True
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 3)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        self._done.set()

    async def wait_for(self, check: Callable[[], Any], what: str, within: float) -> Any:
        """Wait until `check()` returns something truthy; fail with a summary after `within`."""
        return await wait_until(check, f"{self.label}: {what}", within, lambda: [self])

    async def wait_connected(self, within: float = 10.0) -> str:
        server: str = await self.wait_for(
            lambda: self.server if self.connected else None, "connection", within
        )
        return server

    async def _run(self) -> None:
        attempt = 0  # consecutive failures, for the backoff
        established = False  # a connection (past placement) has been made before
        try:
            while not self._stopping:
                link = Link(opened_at=time.monotonic())
                self.links.append(link)
                placed = await self._connection(link, placing=not established)
                if placed is False:
                    self.placement_retries += 1
                    if self.placement_retries >= self.placement_attempts:
                        raise Misbehaved(
                            f"{self.label}: no acceptable replica in "
                            f"{self.placement_retries} tries: {self.servers}"
                        )
                    continue
                if link.server is not None:
                    established = True
                    attempt = 0 if self._steady(link) else attempt + 1
                else:
                    attempt += 1
                if self._stopping or self.finished or not self.reconnect:
                    break
                if established:
                    self.reconnects += 1
                delay = self.rng.uniform(0, min(self.backoff_cap, self.backoff_base * 2**attempt))
                await asyncio.sleep(delay)
        except Exception as exc:  # the caller sees it in `failure` (and in wait_until)
            self.failure = exc
            raise
        finally:
            self._done.set()

    @staticmethod
    def _steady(link: Link) -> bool:
        """A connection that lasted a while resets the backoff."""
        return link.closed_at is not None and link.closed_at - link.opened_at > 1.0

    async def _connection(self, link: Link, *, placing: bool) -> bool | None:
        """One connection, start to end. False: refused by `placement`, closed at once."""
        try:
            ws = await connect(
                self.url,
                proxy=None,
                open_timeout=self.open_timeout,
                close_timeout=2,
                ping_interval=None,  # the server pings; a stalled loop must not close us
            )
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            link.closed_at = time.monotonic()
            link.close_code = NO_CONNECTION
            link.error = (
                f"HTTP {exc.response.status_code}"
                if isinstance(exc, InvalidStatus)
                else f"{type(exc).__name__}: {exc}"
            )
            return None
        try:
            welcome = codec.decode(await ws.recv())
            if codec.kind(welcome) != "welcome":
                raise Misbehaved(f"{self.label}: first frame is not welcome: {welcome}")
            link.server = str(welcome["server"])
            if placing and self.placement is not None and not self.placement(link.server):
                await ws.close()
                link.closed_at = time.monotonic()
                link.close_code = ws.close_code
                return False
            self.ws = ws
            await self._opened(ws)
            while True:
                message = codec.decode(await ws.recv())
                self.messages += 1
                await self._handle(ws, message, link)
                if self.finished and not self.linger:
                    await ws.close()
        except ConnectionClosed as exc:
            link.close_code = exc.rcvd.code if exc.rcvd is not None else 1006
        finally:
            self.ws = None
            self._closed()
            if link.closed_at is None:
                link.closed_at = time.monotonic()
                if link.close_code is None:
                    link.close_code = ws.close_code
        return True

    # --- hooks --------------------------------------------------------------------

    linger = True  # keep the socket open once the game is over (until stop())

    @property
    def finished(self) -> bool:
        return False

    async def _opened(self, ws: ClientConnection) -> None:
        """A new connection got its welcome."""

    def _closed(self) -> None:
        """The connection is gone."""

    async def _handle(self, ws: ClientConnection, message: Frame, link: Link) -> None:
        kind = message.get("type")
        if kind == "state":
            self.states.append(Seen(time.monotonic(), link.server, message))
            if codec.newer(message, self.latest):
                self.latest = message
        elif kind == "error":
            self.errors[message["code"]] += 1
            self.error_log.append((time.monotonic(), message["code"]))


async def wait_until(
    check: Callable[[], Any],
    what: str,
    within: float,
    members: Callable[[], Sequence[Member]] = list,
    poll: float = 0.02,
) -> Any:
    """Poll `check()` until it returns something truthy. After `within` seconds, or as
    soon as one of `members()` crashed, raise TimeoutError with every member's summary."""
    deadline = time.monotonic() + within
    while True:
        found = check()
        if found:
            return found
        crashed = [m for m in members() if m.failure is not None]
        if crashed or time.monotonic() > deadline:
            reason = (
                f"{crashed[0].label} crashed: {crashed[0].failure!r}"
                if crashed
                else f"not within {within}s"
            )
            lines = "\n  ".join(m.summary() for m in members())
            raise TimeoutError(f"{what}: {reason}\n  {lines}")
        await asyncio.sleep(poll)
