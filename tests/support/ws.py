"""WebSocket test helpers: a JSON client over `WebsocketCommunicator` that is always closed.

No helper here takes "nothing arrived for a while" to mean "nothing else will come":
a test waits for the frame it needs (`recv_until`, `state_where`, ...), or for
`settle()`, which lets out the server's pending presence broadcasts and then reads up
to a marker sent to the room behind everything already sent to it. Every wait is a
`tests.support.timing.budget` (TEST_TIME_SCALE).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Sequence
from typing import Any

from channels.testing import WebsocketCommunicator
from django.conf import settings

from gameclient import codec
from gameclient.codec import Frame
from realtime import groups
from realtime.protocol import encode
from tests.support.protocol_schema import check_server_frame
from tests.support.timing import budget

Headers = Sequence[tuple[bytes, bytes]]

# How long a frame that is due may take to reach the test: one second, scaled.
WAIT = budget(1.0)

# The relay payload of a settle marker (a frame of the protocol: `{"payload": ...}`).
# Every reader here skips markers; `settle()` reads up to its own.
MARKER_KEY = "tests.support.ws:settle"
_marker_ids = itertools.count(1)


def strict_json(text: str) -> Frame:
    """Decode a server frame as RFC 8259 JSON sent as UTF-8; it must be an object and a
    message of the protocol (docs/asyncapi.yaml)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise AssertionError(f"frame cannot be sent as UTF-8 ({error}): {text[:200]!r}") from None
    try:
        frame = codec.decode(text)
    except codec.ProtocolError as error:
        raise AssertionError(f"frame {error}") from None
    check_server_frame(frame)  # every field and value as docs/asyncapi.yaml types it
    return frame


def _marker_of(message: dict[str, Any]) -> int | None:
    """The id of the settle marker this ASGI message carries, if it is one."""
    text = message.get("text")
    if message["type"] != "websocket.send" or not text or MARKER_KEY not in text:
        return None
    try:
        frame = json.loads(text)
    except ValueError:
        return None
    payload = frame.get("payload") if isinstance(frame, dict) else None
    if isinstance(payload, dict) and set(payload) == {MARKER_KEY}:
        return int(payload[MARKER_KEY])
    return None


async def presence_settled() -> None:
    """Wait until no coalesced presence broadcast is pending (realtime.groups): each
    has read the room and sent its `state` to the channel layer."""
    loop = asyncio.get_running_loop()
    within = settings.PRESENCE_CONNECT_DELAY_SECONDS + WAIT  # the longest delay, then the send
    deadline = loop.time() + within
    while pending := groups.presence_pending():
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError(f"presence broadcasts still pending after {within:.2f}s")
        await asyncio.wait(pending, timeout=left)


class Client:
    """One test connection speaking JSON text frames."""

    def __init__(self, communicator: WebsocketCommunicator, path: str) -> None:
        self.communicator = communicator
        self.path = path
        self.connected = False
        self.close_code: int | None = None
        self.welcome: Frame = {}
        self.first_state: Frame = {}
        self.mark: str | None = None
        self.token: str | None = None
        self.markers: set[int] = set()  # settle markers this connection has received

    @property
    def room(self) -> str:
        return str(self.welcome.get("room") or self.path.rstrip("/").rsplit("/", 1)[-1])

    async def send(self, message: object) -> None:
        await self.send_text(json.dumps(message))

    async def send_text(self, text: str) -> None:
        await self.communicator.send_to(text_data=text)

    async def send_bytes(self, data: bytes) -> None:
        await self.communicator.send_to(bytes_data=data)

    async def _output(self, within: float) -> dict[str, Any]:
        """The next raw ASGI message, settle markers included."""
        message: dict[str, Any] = await self.communicator.receive_output(within)
        return message

    async def output(self, within: float = WAIT) -> dict[str, Any]:
        """The next raw ASGI message the application sent (frame or close); settle
        markers are noted and skipped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            message = await self._output(max(deadline - loop.time(), 0))
            marker = _marker_of(message)
            if marker is None:
                return message
            self.markers.add(marker)

    async def recv(self, within: float = WAIT) -> Frame:
        """The next text frame, which must be UTF-8-encodable, strict JSON, and an object."""
        message = await self.output(within)
        assert message["type"] == "websocket.send", f"not a frame: {message!r}"
        text = message.get("text")
        assert isinstance(text, str), f"not a text frame: {message!r}"
        return strict_json(text)

    async def recv_until(self, accept: Callable[[Frame], bool], within: float = WAIT) -> Frame:
        """Skip frames until one `accept`s; fail if none does within `within` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        seen: list[Frame] = []
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no matching frame within {within}s; saw {seen!r}")
            try:
                frame = await self.recv(within=left)
            except TimeoutError:
                raise AssertionError(f"no matching frame within {within}s; saw {seen!r}") from None
            if accept(frame):
                return frame
            seen.append(frame)

    async def recv_type(self, kind: str, within: float = WAIT) -> Frame:
        """The next frame of `type` kind, skipping others (e.g. broadcast states)."""
        return await self.recv_until(lambda frame: frame.get("type") == kind, within)

    async def error(self, within: float = WAIT) -> str:
        """The code of the next `error` frame."""
        return str((await self.recv_type("error", within))["code"])

    async def state_where(self, accept: Callable[[Frame], bool], within: float = WAIT) -> Frame:
        """The next `state` frame that `accept`s."""
        return await self.recv_until(
            lambda frame: frame.get("type") == "state" and accept(frame), within
        )

    async def state_at(self, version: int, within: float = WAIT) -> Frame:
        return await self.state_where(lambda state: state["version"] == version, within)

    async def sync(self) -> Frame:
        """The room's current state, asked for and read after everything already sent."""
        await self.settle()
        await self.send({"type": "sync"})
        return await self.recv_type("state")

    async def close_code_received(self, within: float = WAIT) -> int:
        """Read until the server closes the connection; its close code. Fails on a `payload`."""
        while True:
            message = await self.output(within)
            if message["type"] == "websocket.close":
                return int(message.get("code", 1000))
            assert "payload" not in json.loads(message.get("text") or "{}"), message

    async def settle_texts(self) -> list[str]:
        """Every raw text frame (no checks) the server has sent or queued for this
        connection so far, read up to a settle marker.

        First the pending presence broadcasts leave (`presence_settled`); then a marker
        goes to the room through the channel layer, from this process, behind every
        broadcast already sent (a layer keeps one sender's order to a channel). What a
        message caused comes before the marker once the message was handled: when its
        answer was read, or when it is the one message this connection just sent (the
        consumer took it before the marker arrived). For what another connection's
        message caused, settle that connection first."""
        await presence_settled()
        marker = next(_marker_ids)
        await groups.broadcast_text(
            self.room, "game.relay", encode({"payload": {MARKER_KEY: marker}})
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        texts: list[str] = []
        while marker not in self.markers:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"settle marker not back within {WAIT}s; read {texts!r}")
            message = await self._output(left)
            found = _marker_of(message)
            if found is not None:
                self.markers.add(found)
                continue
            assert message["type"] == "websocket.send", message
            texts.append(message.get("text") or "")
        return texts

    async def settle(self) -> list[Frame]:
        """`settle_texts`, each frame checked as `recv` checks it."""
        return [strict_json(text) for text in await self.settle_texts()]

    async def join(self, name: str, token: str | None = None) -> Frame:
        """Take (or with `token`, reclaim) a seat; returns the `joined` frame."""
        await self.send(codec.join(name, token))
        joined = await self.recv_type("joined")
        self.mark, self.token = joined["mark"], joined["token"]
        return joined

    async def close(self) -> None:
        """Disconnect, unless the application already stopped (a failed receive cancels it)."""
        if not self.communicator.future.done():
            await self.communicator.disconnect(timeout=budget(5))


class Sockets:
    """Opens test connections against one ASGI application and closes every one of them."""

    def __init__(self, application: Any) -> None:
        self.application = application
        self.clients: list[Client] = []

    async def open(
        self,
        room: str = "room1",
        *,
        path: str | None = None,
        headers: Headers = (),
        greet: bool = True,
    ) -> Client:
        """Connect to `path` (default: the room's game path).

        With `greet`, the connection must be accepted and its `welcome` and first
        `state` are read into `client.welcome` and `client.first_state`.
        """
        path = path or f"/ws/game/{room}"
        communicator = WebsocketCommunicator(self.application, path, headers=list(headers))
        client = Client(communicator, path)
        self.clients.append(client)
        connected, detail = await communicator.connect(timeout=WAIT)
        client.connected = bool(connected)
        if not connected:
            client.close_code = detail
        if greet:
            assert connected, f"{path} refused with {detail}"
            client.welcome = await client.recv()
            client.first_state = await client.recv()
        return client

    async def close_all(self) -> None:
        errors: list[BaseException] = []
        for client in self.clients:
            try:
                await client.close()
            except Exception as exc:  # keep closing the others
                errors.append(exc)
        self.clients.clear()
        if errors:
            raise errors[0]
