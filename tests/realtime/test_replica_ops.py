"""A real replica on the RabbitMQ layer: readiness, metrics and the SIGTERM drain."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gameclient.connection import Connection
from tests.support.broker import broker_stopped
from tests.support.http import get_json
from tests.support.server import UvicornServer

pytestmark = pytest.mark.e2e


@pytest.fixture
def rabbit_replica(
    server_env: dict[str, str], rabbitmq_url: str, tmp_path: Path
) -> Iterator[UvicornServer]:
    """A replica on its own SQLite file and the module's throwaway vhost."""
    env = {
        **server_env,
        "RABBITMQ_URL": rabbitmq_url,
        "DRAIN_READINESS_DELAY_SECONDS": "1",
        "DRAIN_WINDOW_SECONDS": "2",
    }
    srv = UvicornServer(env=env, name="web-ops", log_dir=tmp_path)
    srv.migrate()
    srv.start()
    yield srv
    srv.stop()


def fetch_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_readyz_checks_database_and_layer_round_trip(rabbit_replica: UvicornServer) -> None:
    status, body = get_json(f"{rabbit_replica.url}/readyz")
    assert status == 200
    assert body == {"status": "ok", "draining": False, "database": "ok", "channel_layer": "ok"}


def test_readyz_fails_while_the_broker_is_down_and_recovers(
    rabbit_replica: UvicornServer,
) -> None:
    with broker_stopped():
        status, body = get_json(f"{rabbit_replica.url}/readyz", timeout=10)
        assert status == 503
        assert body["channel_layer"].startswith("unavailable")
        assert body["database"] == "ok"
        # liveness is not readiness: the process is fine
        assert get_json(f"{rabbit_replica.url}/healthz")[0] == 200
    deadline = time.monotonic() + 15
    while get_json(f"{rabbit_replica.url}/readyz", timeout=10)[0] != 200:
        assert time.monotonic() < deadline, "replica not ready 15 s after the broker returned"
        time.sleep(0.3)


async def test_metrics_count_connections_messages_and_errors(
    rabbit_replica: UvicornServer,
) -> None:
    url = f"{rabbit_replica.ws_url}/ws/game/metrics-room"
    a = await Connection.open(url, "a")
    b = await Connection.open(url, "b")
    try:
        await a.send({"type": "join", "name": "ana"})
        await a.next("joined")
        await a.send({"type": "move", "cell": 4})  # not started: an error
        await a.next("error")
        await a.send({"data": 1})
        await b.next("state")
        text = await asyncio.to_thread(fetch_text, f"{rabbit_replica.url}/metrics")
        assert metric(text, "tictac_ws_connections") == 2
        assert metric(text, "tictac_rooms_active") == 1
        assert metric(text, 'tictac_ws_errors_total{code="not_started"}') == 1
        assert metric(text, 'tictac_ws_messages_in_total{type="join"}') == 1
        assert metric(text, "tictac_group_send_seconds_count") >= 2
        assert metric(text, "tictac_layer_reconnects_total") == 0
        assert metric(text, "tictac_draining") == 0
    finally:
        await a.close()
        await b.close()


async def test_sigterm_drains_readiness_first_then_closes_sockets_with_1012_spread_out(
    rabbit_replica: UvicornServer,
) -> None:
    clients = [
        await Connection.open(f"{rabbit_replica.ws_url}/ws/game/drain-{i % 5}", f"c{i}")
        for i in range(20)
    ]
    for client in clients:
        await client.next("state")
    closed_at: dict[str, float] = {}

    async def watch(client: Connection) -> int | None:
        code = await client.close_code(within=20)
        closed_at[client.label] = time.monotonic()
        return code

    watchers = [asyncio.create_task(watch(c)) for c in clients]
    assert rabbit_replica.proc is not None
    signalled = time.monotonic()
    os.kill(rabbit_replica.proc.pid, signal.SIGTERM)
    await asyncio.sleep(0.3)
    status, body = await asyncio.to_thread(get_json, f"{rabbit_replica.url}/readyz")
    assert status == 503
    assert body["draining"] is True
    assert all(not c.closed for c in clients), "sockets closed before readiness had time to fail"
    codes = await asyncio.gather(*watchers)
    assert codes == [1012] * len(clients)
    first, last = min(closed_at.values()), max(closed_at.values())
    assert first - signalled >= 0.9  # DRAIN_READINESS_DELAY_SECONDS
    assert last - first >= 1.0, "closes were not spread over the drain window"
    # uvicorn re-raises the captured SIGTERM once it has shut down cleanly.
    assert rabbit_replica.proc.wait(20) in (0, -signal.SIGTERM)
    assert "drained; 0 sockets left" in rabbit_replica.log_path.read_text()


async def test_rooms_get_their_state_again_after_the_broker_returns(
    rabbit_replica: UvicornServer,
) -> None:
    """Broadcasts in flight during an outage are lost (at most once); after the
    layer reconnects the replica re-sends every room it serves its state."""
    # A load balancer's readiness probe is the first to use the layer, as in a
    # fleet; the re-send must not depend on that probe's request context.
    assert (await asyncio.to_thread(get_json, f"{rabbit_replica.url}/readyz"))[0] == 200
    client = await Connection.open(f"{rabbit_replica.ws_url}/ws/game/heal-room", "c")
    try:
        await client.next("state")
        await asyncio.sleep(0.5)  # the coalesced presence broadcast
        seen = len(client.states)
        await asyncio.to_thread(_restart_broker)
        deadline = time.monotonic() + 15
        while len(client.states) == seen:
            assert time.monotonic() < deadline, "no state re-sent after the broker returned"
            await asyncio.sleep(0.1)
        assert not client.closed
        assert client.states[-1]["room"] == "heal-room"
    finally:
        await client.close()


def _restart_broker() -> None:
    with broker_stopped():
        time.sleep(0.5)


async def test_a_socket_whose_peer_stops_answering_pings_is_closed_and_others_stay(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    """The server's keepalive: a peer that never answers a ping is closed after the
    timeout; a peer that answers (the websockets client does) stays open."""
    # Pings often; a generous pong deadline, so a loaded machine never fails the answering one.
    env = {**server_env, "WS_PING_INTERVAL_SECONDS": "0.5", "WS_PING_TIMEOUT_SECONDS": "3"}
    srv = UvicornServer(env=env, name="web-ping", log_dir=tmp_path)
    srv.migrate()
    srv.start()
    answering = await Connection.open(f"{srv.ws_url}/ws/game/pings", "answering")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET /ws/game/pings HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        # Never answer: read welcome, state and the pings until the server hangs up.
        async with asyncio.timeout(30):
            while await reader.read(4096):
                pass
        writer.close()
        # The answering client went through the same pings and is still served.
        await answering.send({"type": "ping", "t": 7})
        pong = await answering.next("pong")
        assert pong["t"] == 7
    finally:
        await answering.close()
        srv.stop()
