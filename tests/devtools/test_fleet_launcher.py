"""devtools/fleet/: real gunicorn replicas behind a real HAProxy, on PostgreSQL and RabbitMQ.

Needs Debian's haproxy, PostgreSQL on 127.0.0.1:5432 (a throwaway database per test)
and RabbitMQ on 127.0.0.1:5672.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from devtools.fleet import Fleet
from devtools.fleet.cli import Status
from devtools.processes import Child, free_port, http_status, pid_alive

pytestmark = [pytest.mark.e2e, pytest.mark.fleet]

ROOM = "fleet-launcher"


@pytest.fixture
def fleet(database_url: str, rabbitmq_url: str, tmp_path: Path) -> Fleet:
    return Fleet(
        2,
        settings="config.settings.test",
        database_url=database_url,
        rabbitmq_url=rabbitmq_url,
        log_dir=tmp_path / "fleet",
        # Short drain window: nothing here waits on clients to leave by themselves.
        env={"GRACEFUL_SHUTDOWN_SECONDS": "3"},
    )


def open_socket(stack: ExitStack, fleet: Fleet) -> tuple[ClientConnection, str]:
    """A WebSocket through the load balancer, and the replica its `welcome` names."""
    conn = stack.enter_context(
        connect(f"{fleet.lb_ws_url}/ws/game/{ROOM}", proxy=None, open_timeout=5)
    )
    welcome = json.loads(conn.recv(timeout=5))
    assert welcome["type"] == "welcome", welcome
    return conn, str(welcome["server"])


def servers_of_new_sockets(fleet: Fleet, count: int) -> list[str]:
    """Open `count` sockets at once (leastconn sees them all open), close them, say where."""
    with ExitStack() as stack:
        return [open_socket(stack, fleet)[1] for _ in range(count)]


def close_code(conn: ClientConnection, timeout: float = 10) -> int | None:
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            conn.recv(timeout=deadline - time.monotonic())
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None
    except TimeoutError:
        return None
    return None


def test_lb_spreads_sockets_and_routes_around_a_killed_replica(fleet: Fleet) -> None:
    with fleet:
        assert [r.name for r in fleet.replicas] == ["web-1", "web-2"]
        assert fleet.lb_servers() == {"web-1": "UP", "web-2": "UP"}
        assert set(servers_of_new_sockets(fleet, 6)) == {"web-1", "web-2"}

        killed = fleet.replicas[0].pid
        assert killed is not None
        fleet.kill(0)
        assert not pid_alive(killed)
        # Before HAProxy's checks notice, a connection sent to web-1 is refused and
        # redispatched; afterwards web-1 is out of rotation. Either way nothing fails.
        assert servers_of_new_sockets(fleet, 4) == ["web-2"] * 4
        fleet.wait_lb_state("web-1", "DOWN", timeout=5)
        assert servers_of_new_sockets(fleet, 4) == ["web-2"] * 4

        fleet.restart(0)
        assert fleet.replicas[0].pid != killed
        assert fleet.lb_servers() == {"web-1": "UP", "web-2": "UP"}
        assert set(servers_of_new_sockets(fleet, 6)) == {"web-1", "web-2"}

        # 2 gunicorn masters, their uvicorn workers, haproxy.
        started = fleet.pids()
        assert len(started) >= 5
    assert fleet.pids() == set()
    assert [pid for pid in started if pid_alive(pid)] == []


def test_rolling_restart_closes_sockets_with_1012_and_keeps_the_lb_serving(fleet: Fleet) -> None:
    with fleet, ExitStack() as stack:
        old_pids = [r.pid for r in fleet.replicas]
        held = [open_socket(stack, fleet) for _ in range(4)]
        assert {server for _, server in held} == {"web-1", "web-2"}

        failures: list[BaseException] = []
        roll = threading.Thread(target=lambda: _run(fleet.rolling_restart, failures))
        roll.start()
        served: list[str] = []
        try:
            while roll.is_alive():
                served += servers_of_new_sockets(fleet, 1)
                time.sleep(0.05)
        finally:
            roll.join()
        assert failures == []

        # Every socket was told the replica is restarting; new ones never failed.
        assert [close_code(conn) for conn, _ in held] == [1012] * 4
        assert len(served) > 10
        assert set(served) == {"web-1", "web-2"}
        assert all(
            new != old for new, old in zip([r.pid for r in fleet.replicas], old_pids, strict=True)
        )
        assert fleet.lb_servers() == {"web-1": "UP", "web-2": "UP"}
    assert fleet.pids() == set()


def _run(action: Callable[[], None], failures: list[BaseException]) -> None:
    try:
        action()
    except BaseException as exc:
        failures.append(exc)


def test_the_cli_keeps_its_status_file_for_scripts(
    database_url: str, rabbitmq_url: str, tmp_path: Path
) -> None:
    """`python -m devtools.fleet --status-file` (what `make loadtest` reads): ready once
    the balancer serves, a rolling restart counted once it is done (SIGHUP), stopped."""
    status_path = tmp_path / "status.json"
    lb_port, web_port = free_port(), free_port()
    argv = [sys.executable, "-m", "devtools.fleet", "--replicas", "1"]
    argv += ["--port", str(lb_port), "--replica-base-port", str(web_port)]
    argv += ["--settings", "config.settings.test", "--database-url", database_url]
    argv += ["--rabbitmq-url", rabbitmq_url, "--log-dir", str(tmp_path / "fleet")]
    argv += ["--status-file", str(status_path)]
    cli = Child("fleet-cli", tmp_path / "cli.log")
    cli.spawn(argv, {**os.environ, "GRACEFUL_SHUTDOWN_SECONDS": "3"})

    def status_where(accept: Callable[[dict[str, object]], bool]) -> dict[str, object]:
        deadline = time.monotonic() + 120
        while not accept(found := Status.read(status_path)):
            assert cli.alive, f"the launcher exited:\n{cli.tail()}"
            assert time.monotonic() < deadline, f"status stayed {found}:\n{cli.tail()}"
            time.sleep(0.1)
        return found

    try:
        ready = status_where(lambda s: s.get("state") == "ready")
        assert ready == {"state": "ready", "lb_url": f"http://127.0.0.1:{lb_port}", "rolls_done": 0}
        assert http_status(f"http://127.0.0.1:{lb_port}/readyz") == 200
        cli.send(signal.SIGHUP)
        status_where(lambda s: s.get("rolls_done") == 1 and s.get("state") == "ready")
        assert http_status(f"http://127.0.0.1:{lb_port}/readyz") == 200
        cli.send(signal.SIGTERM)
        assert cli.wait(60), cli.tail()
        assert cli.returncode == 0, cli.tail()
        assert Status.read(status_path)["state"] == "stopped"
    finally:
        cli.stop(10)
