"""The fleet under fire: whole games through HAProxy while replicas drain, die and the
broker restarts. Real gunicorn replicas (deploy/fleet.py), PostgreSQL, RabbitMQ and
well-behaved clients (tests/support/player.py) that reconnect after any close.

Needs Debian's haproxy, PostgreSQL on 127.0.0.1:5432 (a throwaway database per test)
and RabbitMQ on 127.0.0.1:5672 (the broker test stops and restarts its application).
Measurements (reconnects, recovery times) are printed as `fleet-metric` lines: run
with `-s` to see them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deploy.fleet import Fleet, create_database, drop_database
from tests.support.broker import broker_ready, broker_stopped
from tests.support.player import Member, Message, Player, Spectator, wait_until

pytestmark = pytest.mark.e2e

POSTGRES_URL = os.environ.get("POSTGRES_TEST_URL", "postgres://postgres@127.0.0.1:5432/postgres")
RABBITMQ_URL = os.environ.get("RABBITMQ_TEST_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")

PRESENCE_HEARTBEAT = 1.0
PRESENCE_TIMEOUT = 4.0
FLEET_ENV = {
    "DRAIN_READINESS_DELAY_SECONDS": "1",
    "DRAIN_WINDOW_SECONDS": "2",
    "GRACEFUL_SHUTDOWN_SECONDS": "3",
    "PRESENCE_HEARTBEAT_SECONDS": str(PRESENCE_HEARTBEAT),
    "PRESENCE_TIMEOUT_SECONDS": str(PRESENCE_TIMEOUT),
    "BOT_THINK_SECONDS": "0",
}

# X opens. X_WINS: X takes the top row at version 2 + 5 = 7.
X_WINS = {"X": [0, 1, 2], "O": [3, 4, 5]}
# A draw of all nine moves: versions 3..11, so a game lives as long as possible.
DRAW = {"X": [0, 2, 3, 7, 8], "O": [1, 4, 5, 6]}
DRAW_BOARD = ["X", "O", "X", "X", "O", "O", "O", "X", "X"]
THINK = (0.2, 0.5)

_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def metric(name: str, **values: Any) -> None:
    print(f"fleet-metric {name} " + " ".join(f"{k}={v}" for k, v in values.items()))


# --- fixtures -----------------------------------------------------------------------


@pytest.fixture
def database_url() -> Iterator[str]:
    """A throwaway PostgreSQL database `tictac_test_<random>`, dropped afterwards."""
    base = POSTGRES_URL.rsplit("/", 1)[0]
    url = f"{base}/tictac_test_{secrets.token_hex(4)}"
    assert create_database(url)
    try:
        yield url
    finally:
        drop_database(url)


def _log_excerpt(log_dir: Path, limit: int = 60) -> str:
    """Errors and warnings of every replica, HAProxy's server state changes."""
    wanted = re.compile(r"ERROR|CRITICAL|Traceback|Error:|WARNING|is DOWN|is UP|fleet starts")
    lines = []
    for path in sorted(log_dir.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if wanted.search(line):
                lines.append(f"{path.stem}: {line[:300]}")
    return "\n".join(lines[-limit:])


@contextlib_contextmanager := None  # placeholder, replaced below
