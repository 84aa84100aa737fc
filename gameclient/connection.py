"""One asyncio connection to a room: every frame read in the background, waits on demand.

A background task reads every frame, so nothing is missed while the caller waits for
something else; the connection keeps the `state` with the highest version (the later one
on a tie), as docs/protocol.md tells clients to. It does not reconnect: `gameclient.member`
does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from . import codec
from .codec import Frame

T = TypeVar("T")
DEFAULT_TIMEOUT = 5.0


class Connection:
    """`wait`: how long the waits below wait when not told (`within`), and the opening
    handshake's limit (tests scale it for a slow machine)."""

    def __init__(
        self, ws: ClientConnection, label: str = "client", *, wait: float = DEFAULT_TIMEOUT
    ) -> None:
        self.ws = ws
        self.label = label
        self.wait = wait
        self.messages: list[Frame] = []  # everything received, in arrival order
        self.states: list[Frame] = []  # every `state`, in arrival order
        self.latest: Frame | None = None
        self._cursor = 0  # messages before this index were consumed by next()
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls, url: str, label: str = "client", *, wait: float = DEFAULT_TIMEOUT, **kwargs: Any
    ) -> Connection:
        kwargs.setdefault("proxy", None)  # loopback and cluster addresses, never via a proxy
        ws = await connect(url, open_timeout=wait, **kwargs)
        return cls(ws, label, wait=wait)

    async def _read(self) -> None:
        try:
            async for data in self.ws:
                message = codec.decode(data)
                self.messages.append(message)
                if codec.kind(message) == "state":
                    self.states.append(message)
                    if codec.newer(message, self.latest):
                        self.latest = message
                async with self._changed:
                    self._changed.notify_all()
        except ConnectionClosed:
            pass
        finally:
            async with self._changed:
                self._changed.notify_all()

    @property
    def closed(self) -> bool:
        return self._reader.done()

    async def wait_for(
        self, check: Callable[[], T | None], what: str, within: float | None = None
    ) -> T:
        """Wait until `check()` returns something other than None; TimeoutError (saying
        what was awaited and what came last) after `within` seconds (default: the
        connection's `wait`), ConnectionError if the connection closed first."""
        within = self.wait if within is None else within
        try:
            async with asyncio.timeout(within), self._changed:
                while True:
                    found = check()
                    if found is not None:
                        return found
                    if self.closed:
                        raise ConnectionError(
                            f"{self.label}: closed ({self.ws.close_code}) waiting for {what}"
                        )
                    await self._changed.wait()
        except TimeoutError:
            recent = self.messages[-5:]
            raise TimeoutError(
                f"{self.label}: no {what} within {within}s; last messages: {recent}"
            ) from None

    async def send(self, message: dict[str, Any]) -> None:
        """Send a client message (build it with `gameclient.codec`)."""
        await self.ws.send(codec.encode(message))

    async def next(self, kind: str, within: float | None = None) -> Frame:
        """The next not yet consumed message of type `kind` (earlier ones are skipped)."""

        def check() -> Frame | None:
            for index in range(self._cursor, len(self.messages)):
                if codec.kind(self.messages[index]) == kind:
                    self._cursor = index + 1
                    return self.messages[index]
            return None

        return await self.wait_for(check, f"{kind!r} message", within)

    async def state_where(
        self, predicate: Callable[[Frame], bool], what: str, within: float | None = None
    ) -> Frame:
        """Wait until the latest state satisfies `predicate`."""

        def check() -> Frame | None:
            latest = self.latest
            return latest if latest is not None and predicate(latest) else None

        return await self.wait_for(check, what, within)

    async def at_version(self, version: int, within: float | None = None) -> Frame:
        return await self.state_where(
            lambda state: state["version"] >= version, f"state version {version}", within
        )

    async def close_code(self, within: float | None = None) -> int | None:
        """Wait for the server to close the connection; its close code."""
        await asyncio.wait_for(
            asyncio.shield(self._reader), self.wait if within is None else within
        )
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
        await self._reader
