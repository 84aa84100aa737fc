"""The benchmark's server apps besides the game itself.

- `relay_application`: the Channels tutorial's chat consumer (the seed of GameRoom)
  on whichever layer `BENCH_LAYER` names.
- `raw_application`: a WebSocket broadcast in plain ASGI, no Channels: the ceiling.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.urls import re_path

from realtime.dispatch import LeanDispatchMixin

django_asgi_app = get_asgi_application()


class RelayConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """The tutorial's ChatConsumer: receive, group_send, each member sends."""

    async def connect(self) -> None:
        self.group = "room." + self.scope["url_route"]["kwargs"]["room"]
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        message = json.loads(text_data or "{}")["message"]
        await self.channel_layer.group_send(
            self.group, {"type": "chat.message", "message": message}
        )

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps({"message": event["message"]}))


class LeanRelayConsumer(LeanDispatchMixin, RelayConsumer):
    """The same relay on the project's lean message loop (realtime/dispatch.py)."""


_consumer = LeanRelayConsumer if os.environ.get("BENCH_CONSUMER") == "lean" else RelayConsumer
relay_application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter([re_path(r"^ws/game/(?P<room>[^/]+)$", _consumer.as_asgi())]),
    }
)

_rooms: dict[str, set[Any]] = defaultdict(set)


async def raw_application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"status":"ok"}'})
        return
    if scope["type"] != "websocket":
        return
    room = _rooms[scope["path"].rsplit("/", 1)[-1]]
    while True:
        event = await receive()
        if event["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
            room.add(send)
        elif event["type"] == "websocket.receive":
            message = json.loads(event.get("text") or "{}")["message"]
            frame = {"type": "websocket.send", "text": json.dumps({"message": message})}
            for member in list(room):
                await member(frame)
        elif event["type"] == "websocket.disconnect":
            room.discard(send)
            return
