"""A real replica and clients that drop their TCP connection right after a message (a
closed tab, a lost phone): ordinary disconnects, never counted as server errors (1011)."""

from __future__ import annotations

import contextlib
import socket
import struct
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support.server import UvicornServer

pytestmark = [pytest.mark.e2e]

TRIES = 30


def server_errors(replica: UvicornServer) -> float:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{replica.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    prefix = 'tictac_ws_server_closes_total{code="1011"} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


@pytest.mark.parametrize("message", ['{"type":"join","name":"ana"}', '{"type":"sync"}'])
def test_clients_dropping_right_after_a_message_are_not_server_errors(
    replica: UvicornServer, message: str
) -> None:
    for n in range(TRIES):
        # Leaving the block closes a socket that is gone already: that error is ours.
        with (
            contextlib.suppress(OSError, ConnectionClosed),
            connect(f"{replica.ws_url}/ws/game/gone-{n}", proxy=None, open_timeout=10) as ws,
        ):
            ws.recv(timeout=10)  # welcome
            ws.recv(timeout=10)  # state
            ws.send(message)
            # Reset the TCP connection at once (SO_LINGER 0): no close frame, no goodbye.
            ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            ws.socket.close()
    # The replica still serves, and counted none of it as its own error.
    with connect(f"{replica.ws_url}/ws/game/after", proxy=None, open_timeout=10) as ws:
        assert '"welcome"' in str(ws.recv(timeout=10))
    assert server_errors(replica) == 0
    assert "message failed" not in replica.log_path.read_text()
