"""WebSocket test helpers: a JSON client over `WebsocketCommunicator` that is always closed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

from channels.testing import WebsocketCommunicator

from gameclient import codec
from gameclient.codec import Frame
from tests.support.protocol_schema import check_server_frame

Headers = Sequence[tuple[bytes, bytes]]


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

    async def send(self, message: object) -> None:
        await self.send_text(json.dumps(message))

    async def send_text(self, text: str) -> None:
        await self.communicator.send_to(text_data=text)

    async def send_bytes(self, data: bytes) -> None:
        await self.communicator.send_to(bytes_data=data)

    async def output(self, within: float = 1) -> dict[str, Any]:
        """The next raw ASGI message the application sent (frame or close)."""
        message: dict[str, Any] = await self.communicator.receive_output(within)
        return message

    async def recv(self, within: float = 1) -> Frame:
        """The next text frame, which must be UTF-8-encodable, strict JSON, and an object."""
        text = await self.communicator.receive_from(within)
        assert isinstance(text, str), f"not a text frame: {text!r}"
        return strict_json(text)

    async def texts(self, quiet: float = 0.05) -> list[str]:
        """Every raw text frame that arrives until the connection is quiet (no checks)."""
        texts: list[str] = []
        while not await self.communicator.receive_nothing(timeout=quiet):
            message = await self.output()
            assert message["type"] == "websocket.send", message
            texts.append(message.get("text") or "")
        return texts

    async def recv_until(self, accept: Callable[[Frame], bool], within: float = 1) -> Frame:
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

    async def recv_type(self, kind: str, within: float = 1) -> Frame:
        """The next frame of `type` kind, skipping others (e.g. broadcast states)."""
        return await self.recv_until(lambda frame: frame.get("type") == kind, within)

    async def error(self, within: float = 1) -> str:
        """The code of the next `error` frame."""
        return str((await self.recv_type("error", within))["code"])

    async def state_where(self, accept: Callable[[Frame], bool], within: float = 1) -> Frame:
        """The next `state` frame that `accept`s."""
        return await self.recv_until(
            lambda frame: frame.get("type") == "state" and accept(frame), within
        )

    async def state_at(self, version: int, within: float = 1) -> Frame:
        return await self.state_where(lambda state: state["version"] == version, within)

    async def sync(self) -> Frame:
        """The room's current state, asked for and read after everything already queued."""
        await self.drain()
        await self.send({"type": "sync"})
        return await self.recv_type("state")

    async def close_code_received(self, within: float = 1) -> int:
        """Read until the server closes the connection; its close code. Fails on a `payload`."""
        while True:
            message = await self.output(within)
            if message["type"] == "websocket.close":
                return int(message.get("code", 1000))
            assert "payload" not in json.loads(message.get("text") or "{}"), message

    async def drain(self, quiet: float = 0.05) -> list[Frame]:
        """Read and return every frame that arrives until the connection is quiet."""
        frames: list[Frame] = []
        while not await self.communicator.receive_nothing(timeout=quiet):
            frames.append(await self.recv())
        return frames

    async def join(self, name: str, token: str | None = None) -> Frame:
        """Take (or with `token`, reclaim) a seat; returns the `joined` frame."""
        await self.send(codec.join(name, token))
        joined = await self.recv_type("joined")
        self.mark, self.token = joined["mark"], joined["token"]
        return joined

    async def close(self) -> None:
        """Disconnect, unless the application already stopped (a failed receive cancels it)."""
        if not self.communicator.future.done():
            await self.communicator.disconnect(timeout=5)


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
        connected, detail = await communicator.connect()
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
