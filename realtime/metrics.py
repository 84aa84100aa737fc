"""Prometheus metrics of a web replica (`GET /metrics`).

One gunicorn worker per replica (pod) is the supported shape, so the default
registry is the replica's. The layer's own metrics live in layer/metrics.py.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge("tictac_ws_connections", "Open WebSocket connections on this replica")
ROOMS = Gauge("tictac_rooms_active", "Rooms with at least one connection on this replica")
MESSAGES_IN = Counter("tictac_ws_messages_in_total", "Client frames received", ["type"])
MESSAGES_OUT = Counter("tictac_ws_messages_out_total", "Frames sent to clients", ["type"])
ERRORS = Counter("tictac_ws_errors_total", "error frames sent, by code", ["code"])
CLOSES = Counter("tictac_ws_server_closes_total", "Sockets closed by the server", ["code"])
REFUSED = Counter(
    "tictac_ws_refused_total", "Sockets refused by a fleet limit (closed with 1013)", ["reason"]
)
CLIENT_GONE = Counter(
    "tictac_ws_client_gone_total", "Frames not sent because the client had closed its end"
)
GROUP_SEND_SECONDS = Histogram(
    "tictac_group_send_seconds",
    "Latency of group_send to a room",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 15.0),
)
DRAINING = Gauge("tictac_draining", "1 while this replica drains its sockets")

# Bound children for the per-message path.
OUT_STATE = MESSAGES_OUT.labels("state")
OUT_CHAT = MESSAGES_OUT.labels("chat")
OUT_RELAY = MESSAGES_OUT.labels("relay")


_in_by_class: dict[type, Counter] = {}


def count_in(message: object) -> None:
    """Count a parsed client message by type; children bound once per message class."""
    child = _in_by_class.get(type(message))
    if child is None:
        child = _in_by_class[type(message)] = MESSAGES_IN.labels(type(message).__name__.lower())
    child.inc()
