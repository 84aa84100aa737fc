"""Presence is ordered on the wire (docs/protocol.md, `presence_at`): every `state` says
when its presence was counted, so of two counts arriving in either order a client keeps
the later. Through the full ASGI stack, on SQLite, PostgreSQL and the RabbitMQ layer."""

from __future__ import annotations

import pytest

from gameclient import codec
from tests.support.ws import Sockets

pytestmark = [
    pytest.mark.both_databases,
    pytest.mark.rabbitmq_layer,
    pytest.mark.django_db(transaction=True, available_apps=["game", "django.contrib.auth"]),
]

ROOM = "presence-order"


async def test_each_new_count_is_later_than_the_one_before(ws: Sockets) -> None:
    ana = await ws.open(ROOM)
    first = ana.first_state
    assert isinstance(first["presence_at"], int)
    assert first["presence_at"] > 0
    await ana.join("ana")
    seated = await ana.state_at(1)
    watcher = await ws.open(ROOM)
    counted = await ana.state_where(lambda s: s["spectators"] == 1)
    assert watcher.first_state["presence_at"] >= seated["presence_at"]
    await watcher.close()
    gone = await ana.state_where(lambda s: s["spectators"] == 0 and s["version"] == 1)
    assert gone["presence_at"] > counted["presence_at"] >= seated["presence_at"]
    # The earlier count, arriving late, changes nothing for a client that merges.
    kept = codec.merged(counted, codec.merged(gone, None))
    assert (kept["spectators"], kept["presence_at"]) == (0, gone["presence_at"])
