"""The WebSocket handshake's Origin check (config/asgi.py, config/origin.py) with the
settings the tests run with (config/settings/test.py: ALLOWED_HOSTS' default, `127.0.0.1`,
`localhost` and `[::1]`).

docs/protocol.md: "Browser `Origin` headers must name an allowed host; requests with no
`Origin` (non-browser clients) are accepted." ALLOWED_HOSTS names hosts, not origins, so
an allowed host is accepted under any scheme and port; anything else is refused during
the handshake (HTTP 403 behind a server), never accepted and then closed, and the
refused socket never reaches the consumer (no room, no connection row).

Runs on SQLite and on PostgreSQL (DATABASE_URL), through `config.asgi.application`
as a client on the wire sees it.
"""

from __future__ import annotations

import pytest
from django.conf import settings

from game.models import Connection, Room
from tests.support.ws import Sockets

pytestmark = [
    pytest.mark.both_databases,
    pytest.mark.django_db(transaction=True, available_apps=["game", "django.contrib.auth"]),
]

ALLOWED_HOST = "localhost"

REFUSED: dict[str, bytes] = {
    "null (sandboxed frame, file:)": b"null",
    "empty": b"",
    "a host without a scheme": b"localhost",
    "file scheme": b"file://",
    "foreign": b"http://evil.example",
    "allowed host as a subdomain of another": b"http://localhost.evil.com",
    "testserver as a subdomain of another": b"http://testserver.evil.com",
    "allowed host with a prefix": b"http://evil-localhost",
    "testserver with a prefix": b"http://evil-testserver",
    "allowed host with a suffix": b"http://localhostx",
    "a subdomain of the allowed host": b"http://evil.localhost",
    "allowed host as user info": b"http://localhost@evil.example",
    "allowed host with a trailing dot": b"http://localhost.",
    "allowed host with a trailing dot and a port": b"https://localhost.:8000",
    "an IP next to the allowed one": b"http://127.0.0.2",
    "the allowed IP as a subdomain of another": b"http://127.0.0.1.evil.com",
    "another IPv6 host": b"http://[::2]",
    "foreign https": b"https://evil.example",
    "foreign with the allowed port": b"http://evil.example:8000",
}

ACCEPTED: dict[str, bytes] = {
    "allowed host": b"http://localhost",
    "allowed host over https": b"https://localhost",
    "allowed host with another port": b"http://localhost:9999",
    "allowed host over https with another port": b"https://localhost:8443",
    "allowed host in capitals": b"http://LOCALHOST",
    "allowed host in mixed case with a port": b"https://LocalHost:8000",
    "allowed IPv4 host": b"http://127.0.0.1:8000",
    "allowed IPv6 host": b"http://[::1]:8000",
}


async def rows() -> tuple[int, int]:
    """(rooms, connections) in the database."""
    return await Room.objects.acount(), await Connection.objects.acount()


def test_the_allowed_host_is_one_of_the_test_settings() -> None:
    """The cases below are written against the test settings' ALLOWED_HOSTS."""
    assert ALLOWED_HOST in settings.ALLOWED_HOSTS
    assert "*" not in settings.ALLOWED_HOSTS
    assert not any(host.startswith(".") for host in settings.ALLOWED_HOSTS)


@pytest.mark.parametrize("origin", list(REFUSED.values()), ids=list(REFUSED))
async def test_an_origin_that_does_not_name_an_allowed_host_is_refused_in_the_handshake(
    ws: Sockets, origin: bytes
) -> None:
    client = await ws.open(headers=[(b"origin", origin)], greet=False)

    # The first thing the application sent was the close: the handshake was refused.
    # (A socket accepted and then closed would have connected.)
    assert client.connected is False, origin
    assert await rows() == (0, 0)  # the consumer never ran


@pytest.mark.parametrize("origin", list(ACCEPTED.values()), ids=list(ACCEPTED))
async def test_an_origin_that_names_an_allowed_host_is_accepted(ws: Sockets, origin: bytes) -> None:
    client = await ws.open(headers=[(b"origin", origin)])

    assert client.connected is True
    assert client.welcome["type"] == "welcome"
    assert client.first_state["type"] == "state"
    assert client.first_state["spectators"] == 1
    await client.send({"type": "ping", "t": 1})
    assert await client.recv_type("pong") == {"type": "pong", "t": 1}
    assert await rows() == (1, 1)


async def test_no_origin_is_accepted_as_a_non_browser_client(ws: Sockets) -> None:
    client = await ws.open(headers=[(b"user-agent", b"a bot")])

    assert client.connected is True
    assert client.welcome["type"] == "welcome"
    assert await rows() == (1, 1)


async def test_a_refused_origin_takes_no_seat_and_tells_the_room_nothing(ws: Sockets) -> None:
    """A member of the room sees no spectator come and go for a refused handshake."""
    member = await ws.open("watched", headers=[(b"origin", b"http://localhost")])
    before = await member.sync()

    refused = await ws.open("watched", headers=[(b"origin", b"http://evil.example")], greet=False)

    assert refused.connected is False
    after = await member.sync()
    assert after["spectators"] == before["spectators"] == 1
    assert after["version"] == before["version"]
    assert await rows() == (1, 1)
