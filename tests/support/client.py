"""A small asyncio `websockets` client for end-to-end tests.

A background task reads every frame, so nothing is missed while a test waits
for something else; the client keeps the `state` with the highest version
(the later one on a tie), as docs/protocol.md tells clients to.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

T = TypeVar("T")
Message = dict[str, Any]
DEFAULT_TIMEOUT = 5.0


class GameClient:
    def __init__(self, ws: ClientConnection, label: str = "client") -> None:
        self.ws = ws
        self.label = label
        self.messages: list[Message] = []  # everything received, in arrival order
        self.states: list[Message] = []  # every `state`, in arrival order
        self.latest: Message | None = None
        self._cursor = 0  # messages before this index were consumed by next()
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, label: str = "client", **kwargs: Any) -> GameClient:
        ws = await connect(url, open_timeout=DEFAULT_TIMEOUT, **kwargs)
        return cls(ws, label)

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                text = frame.decode() if isinstance(frame, bytes) else frame
                message = json.loads(text)
                self.messages.append(message)
                if message.get("type") == "state":
                    self.states.append(message)
                    if self.latest is None or message["version"] >= self.latest["version"]:
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
        self, check: Callable[[], T | None], what: str, within: float = DEFAULT_TIMEOUT
    ) -> T:
        """Wait until `check()` returns something other than None."""
        try:
            async with asyncio.timeout(within), self._changed:
                while True:
                    found = check()
                    if found is not None:
                        return found
                    if self.closed:
                        raise AssertionError(
                            f"{self.label}: closed ({self.ws.close_code}) waiting for {what}"
                        )
                    await self._changed.wait()
        except TimeoutError:
            recent = self.messages[-5:]
            raise AssertionError(
                f"{self.label}: no {what} within {within}s; last messages: {recent}"
            ) from None

    async def send(self, message: object) -> None:
        await self.ws.send(json.dumps(message))

    async def next(self, kind: str, within: float = DEFAULT_TIMEOUT) -> Message:
        """The next not yet consumed message of type `kind` (earlier ones are skipped)."""

        def check() -> Message | None:
            for index in range(self._cursor, len(self.messages)):
                if self.messages[index].get("type") == kind:
                    self._cursor = index + 1
                    return self.messages[index]
            return None

        return await self.wait_for(check, f"{kind!r} message", within)

    async def state_where(
        self, predicate: Callable[[Message], bool], what: str, within: float = DEFAULT_TIMEOUT
    ) -> Message:
        """Wait until the latest state satisfies `predicate`."""

        def check() -> Message | None:
            latest = self.latest
            return latest if latest is not None and predicate(latest) else None

        return await self.wait_for(check, what, within)

    async def at_version(self, version: int, within: float = DEFAULT_TIMEOUT) -> Message:
        return await self.state_where(
            lambda state: state["version"] >= version, f"state version {version}", within
        )

    async def close_code(self, within: float = DEFAULT_TIMEOUT) -> int | None:
        """Wait for the server to close the connection; its close code."""
        await asyncio.wait_for(asyncio.shield(self._reader), within)
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
        await self._reader


def get_json(url: str, timeout: float = DEFAULT_TIMEOUT) -> tuple[int, Any]:
    """GET a JSON document (blocking: call it through asyncio.to_thread)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), json.loads(error.read() or b"null")
