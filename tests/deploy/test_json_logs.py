"""LOG_FORMAT=json: every log record is one JSON object per line (config/logs.py), with the
timestamp, level, logger, message, the exception's traceback, and the replica, room and
connection ids when known; the default stays plain text (`make run`).

Each case is a fresh interpreter configured by the settings alone (django.setup() applies
LOGGING), so the test session's own logging is left alone.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

# Two sockets' tasks log at once, as GameRoom consumers do after connect() bound their ids;
# one raises; then a record outside any socket.
EMIT = """
import asyncio, logging
import django
django.setup()
from config import logs
import realtime.replica

log = logging.getLogger("realtime.consumers")

async def socket(room, connection):
    logs.bind(room=room, connection=connection)
    await asyncio.sleep(0)
    log.warning("move rejected: %s", "stale_version")
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("room %s: message failed", room)

async def main():
    await asyncio.gather(socket("abc12", "specific.web-1!a"), socket("xyz34", "specific.web-1!b"))
    log.info("outside any socket", extra={"moves": 3})

asyncio.run(main())
print("REPLICA=" + realtime.replica.replica_id())
"""


def emit(log_format: str | None) -> tuple[list[str], str]:
    env = {k: v for k, v in os.environ.items() if k != "LOG_FORMAT"}
    env["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
    env["LOG_LEVEL"] = "INFO"
    if log_format is not None:
        env["LOG_FORMAT"] = log_format
    done = subprocess.run(
        [sys.executable, "-c", EMIT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (replica,) = [line[8:] for line in done.stdout.splitlines() if line.startswith("REPLICA=")]
    return done.stderr.splitlines(), replica


def test_json_log_lines_carry_the_fields_and_the_socket_they_concern() -> None:
    lines, replica = emit("json")
    records: list[dict[str, Any]] = [json.loads(line) for line in lines]  # every line
    ours = [r for r in records if r["logger"] == "realtime.consumers"]
    assert len(ours) == 5, records
    for record in records:
        assert {"timestamp", "level", "logger", "message"} <= set(record), record
        assert datetime.fromisoformat(record["timestamp"]).utcoffset() is not None
    warnings = [r for r in ours if r["level"] == "WARNING"]
    errors = [r for r in ours if r["level"] == "ERROR"]
    assert sorted(r["room"] for r in warnings) == ["abc12", "xyz34"]
    for record in warnings + errors:
        # Each task's own ids: contextvars do not leak between sockets.
        suffix = {"abc12": "!a", "xyz34": "!b"}[record["room"]]
        assert record["connection"].endswith(suffix), record
        assert record["replica"] == replica
    for record in errors:
        assert record["message"] == f"room {record['room']}: message failed"
        assert "Traceback (most recent call last)" in record["exception"]
        assert "ZeroDivisionError" in record["exception"]
    (outside,) = [r for r in ours if r["level"] == "INFO"]
    assert outside["message"] == "outside any socket"
    assert outside["moves"] == 3
    assert "room" not in outside
    assert "connection" not in outside
    assert outside["replica"] == replica
    assert "exception" not in outside


def test_text_is_the_default() -> None:
    lines, _ = emit(None)
    assert any("WARNING realtime.consumers move rejected: stale_version" in line for line in lines)
    assert not [line for line in lines if line.startswith("{")]


def test_the_consumer_binds_its_room_and_connection_first_thing_in_connect() -> None:
    tree = ast.parse((ROOT / "realtime" / "consumers.py").read_text())
    (room,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "GameRoom"]
    (connect,) = [
        n for n in room.body if isinstance(n, ast.AsyncFunctionDef) and n.name == "connect"
    ]
    first = [ast.unparse(statement) for statement in connect.body[:3]]
    assert "logs.bind(room=self.room, connection=self.channel_name)" in first, first
