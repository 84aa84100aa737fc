"""Log records as one JSON object per line (LOG_FORMAT=json), with the replica, room and
connection they concern.

config/settings/base.py names these classes in LOGGING; `make run` keeps the plain text
format (LOG_FORMAT=text, the default), production sets json (k8s/overlays/production).
A JSON line holds `timestamp` (UTC, ISO 8601), `level`, `logger`, `message`, `exception`
(the formatted traceback, when there is one), anything passed in `extra=`, and, when
known, `replica` (realtime.replica.replica_id() of a web replica), `room` and
`connection` (set by the socket's consumer with `bind()`: contextvars, so they follow
the consumer's task and whatever it awaits, and never leak into another socket's task).
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

ROOM: ContextVar[str | None] = ContextVar("log_room", default=None)
CONNECTION: ContextVar[str | None] = ContextVar("log_connection", default=None)

FIELDS = ("replica", "room", "connection")


def bind(*, room: str | None = None, connection: str | None = None) -> None:
    """Name the room and the connection of the current task's log records."""
    ROOM.set(room)
    CONNECTION.set(connection)


def replica() -> str | None:
    """This process's replica id, once it is a web replica (realtime.replica is imported).

    Looked up in sys.modules rather than imported: importing realtime/ from here would
    pull the app's models in while logging is being configured (before the apps are
    ready), and config/ would depend on realtime/. A worker or a management command that
    never imports it has no replica id.
    """
    module = sys.modules.get("realtime.replica")
    if module is None:
        return None
    try:
        return str(module.replica_id())
    except Exception:  # settings not ready yet: not known
        return None


class ContextFilter(logging.Filter):
    """Puts the replica, room and connection on every record that passes (None: unknown)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "replica", None) is None:
            record.replica = replica()
        if getattr(record, "room", None) is None:
            record.room = ROOM.get()
        if getattr(record, "connection", None) is None:
            record.connection = CONNECTION.get()
        return True


class JsonFormatter(_JsonFormatter):
    """python-json-logger's formatter with this project's field names; fields that are not
    known (None) are left out rather than written as null."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        super().__init__(["levelname", "name", "message", *FIELDS], **kwargs)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["timestamp"] = datetime.fromtimestamp(record.created, tz=UTC).isoformat()
        super().add_fields(log_data, record, message_dict)
        if "exc_info" in log_data:
            log_data["exception"] = log_data.pop("exc_info")
        for key in [k for k, v in log_data.items() if v is None and k in FIELDS]:
            del log_data[key]
