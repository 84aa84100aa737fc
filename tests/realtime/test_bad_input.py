"""Bad input and clients that vanish never close a socket with 1011 (our bug), on the full
ASGI stack: a malformed frame gets an `error` frame and the socket keeps serving; a
client that goes away while its message is answered is an ordinary disconnect."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from prometheus_client import REGISTRY
from uvicorn.protocols.utils import ClientDisconnected

from config.asgi import application
from tests.support.ws import Sockets

pytestmark = [pytest.mark.both_databases, pytest.mark.django_db(transaction=True)]

MALFORMED: list[str | bytes] = [
    "not json",
    "[1, 2]",
    '"state"',
    "null",
    "{",
    '{"type": 7}',
    '{"type": "shout"}',
    "{}",
    '{"data": NaN}',
    '{"data": Infinity}',
    '{"data": 1e999}',
    '{"data": [-1e400]}',
    '{"type": "ping", "t": 1e999}',
    '{"type": "move", "cell": 1e999}',
    '{"type": "move", "cell": "4"}',
    '{"type": "move", "cell": 4, "version": 1.5}',
    '{"type": "join", "name": 7}',
    '{"type": "join", "name": "ana", "token": 7}',
    '{"type": "chat", "text": ""}',
    '{"type": "chat", "text": ["gg"]}',
    '{"type": "bot", "level": "godlike"}',
    '{"type": "quickmatch"}',
    '{"type": "rematch"}',
    '{"data": ' + "[" * 100 + "]" * 100 + "}",
    '{"data": ' + "9" * 5000 + "}",
    b"\x00\x01binary",
]


def server_errors() -> float:
    return REGISTRY.get_sample_value("tictac_ws_server_closes_total", {"code": "1011"}) or 0.0


@pytest.mark.parametrize("frame", MALFORMED, ids=lambda f: repr(f)[:40])
async def test_a_malformed_frame_gets_an_error_and_the_socket_keeps_serving(
    ws: Sockets, frame: str | bytes
) -> None:
    before = server_errors()
    client = await ws.open("badinput")
    if isinstance(frame, bytes):
        await client.send_bytes(frame)
    else:
        await client.send_text(frame)
    error = await client.recv_type("error")
    assert error["code"] in {"bad_json", "bad_message", "unknown_type", "not_joined"}, error
    await client.send({"type": "ping", "t": 1})
    assert (await client.recv_type("pong"))["t"] == 1
    assert server_errors() == before


class GoneClient:
    """An ASGI server's side of one socket whose client goes away at a chosen moment:
    from then on every send raises what uvicorn raises (an OSError, as ASGI asks)."""

    def __init__(self, path: str) -> None:
        self.scope = WebsocketCommunicator(application, path).scope
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.attempted_after_gone: list[dict[str, Any]] = []
        self.gone = False
        self.greeted = asyncio.Event()  # welcome and state sent: broadcasts flow

    async def receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    async def send(self, message: dict[str, Any]) -> None:
        if self.gone:
            self.attempted_after_gone.append(message)
            raise ClientDisconnected()
        self.sent.append(message)
        if len(self.frames()) >= 2:
            self.greeted.set()

    def frames(self) -> list[dict[str, Any]]:
        return [json.loads(m["text"]) for m in self.sent if m["type"] == "websocket.send"]


@pytest.mark.parametrize(
    "message",
    [
        {"type": "sync"},
        {"type": "join", "name": "ana"},
        {"type": "ping", "t": 1},
        {"type": "move", "cell": 4},
        {"type": "chat", "text": "gg"},
        {"data": "hello"},
    ],
    ids=lambda m: str(m.get("type", "relay")),
)
async def test_a_client_gone_while_its_message_is_answered_is_an_ordinary_close(
    ws: Sockets, message: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    before = server_errors()
    client = GoneClient("/ws/game/gone")

    async def serve() -> None:
        await application(client.scope, client.receive, client.send)

    app = asyncio.create_task(serve())
    await client.incoming.put({"type": "websocket.connect"})
    await asyncio.wait_for(client.greeted.wait(), 10)
    client.gone = True
    with caplog.at_level(logging.ERROR):
        await client.incoming.put({"type": "websocket.receive", "text": json.dumps(message)})
        await client.incoming.put({"type": "websocket.disconnect", "code": 1006})
        async with asyncio.timeout(10):
            await app
    closes = [m.get("code") for m in client.attempted_after_gone if m["type"] == "websocket.close"]
    assert 1011 not in closes
    assert server_errors() == before
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
