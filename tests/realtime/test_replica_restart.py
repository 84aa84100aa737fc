"""A replica restarted under its name (a container restart in the same pod) drops its
predecessor's connections when it starts: no ghost players or spectators for the presence
timeout (35 s by default)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.support.server import UvicornServer

pytestmark = [pytest.mark.e2e]


def first_state(server: UvicornServer, room: str) -> dict[str, object]:
    with connect(f"{server.ws_url}/ws/game/{room}", proxy=None, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "welcome"
        state: dict[str, object] = json.loads(ws.recv(timeout=10))
        return state


def test_a_replica_restarted_under_its_name_shows_no_ghosts(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3"}  # presence timeout: 35 s
    room = "restart-ghosts"
    before = UvicornServer(env=env, name="web-1", log_dir=tmp_path)
    before.migrate()
    after = UvicornServer(env=env, name="web-1", port=before.port, log_dir=tmp_path)
    try:
        before.start()
        with contextlib.ExitStack() as sockets:
            url = f"{before.ws_url}/ws/game/{room}"
            ana = sockets.enter_context(connect(url, proxy=None, open_timeout=10))
            ana.send(json.dumps({"type": "join", "name": "ana"}))
            while json.loads(ana.recv(timeout=10)).get("type") != "joined":
                pass
            for _ in range(3):  # three spectators besides
                sockets.enter_context(connect(url, proxy=None, open_timeout=10))
            before.kill()  # no cleanup: its rows stay behind
        after.start()
        state = first_state(after, room)  # the first look, long before any timeout
        assert state["spectators"] == 1, state  # only the socket looking
        players = state["players"]
        assert isinstance(players, dict)
        assert players["X"] == {"name": "ana", "online": False}
    finally:
        before.stop()
        after.stop()
