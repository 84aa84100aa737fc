"""Every load-test knob, read from the environment in one place (12-factor, like the app).

Locust's own options (users, spawn rate, run time, host, tags) live in loadtest/locust.conf
and on its command line; these are the scenario parameters and the pass/fail thresholds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    return raw in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Config:
    # --- scenario shape -------------------------------------------------------------
    # Relative weights of the User classes (Locust's `weight`; 0 leaves a class out).
    match_weight: int = field(default_factory=lambda: _int("MATCH_WEIGHT", 10))
    fanout_weight: int = field(default_factory=lambda: _int("FANOUT_WEIGHT", 1))
    churn_weight: int = field(default_factory=lambda: _int("CHURN_WEIGHT", 6))
    relay_weight: int = field(default_factory=lambda: _int("RELAY_WEIGHT", 3))
    # Spectators per fan-out room (50 locally; 50-500 in a cluster).
    spectators_per_room: int = field(default_factory=lambda: _int("SPECTATORS_PER_ROOM", 50))
    # Members of a relay room; every one but the sender must get each payload.
    relay_members: int = field(default_factory=lambda: _int("RELAY_MEMBERS", 3))
    # Think time before each move (seconds, uniform).
    think_min_s: float = field(default_factory=lambda: _float("THINK_MIN_S", 0.3))
    think_max_s: float = field(default_factory=lambda: _float("THINK_MAX_S", 1.0))
    # Pause between games of a MatchUser / relay messages of a RelayUser.
    game_pause_min_s: float = field(default_factory=lambda: _float("GAME_PAUSE_MIN_S", 0.5))
    game_pause_max_s: float = field(default_factory=lambda: _float("GAME_PAUSE_MAX_S", 2.0))
    relay_pause_min_s: float = field(default_factory=lambda: _float("RELAY_PAUSE_MIN_S", 0.5))
    relay_pause_max_s: float = field(default_factory=lambda: _float("RELAY_PAUSE_MAX_S", 1.5))
    # ChurnUser: how long a connection is held, and the pause before the next one.
    churn_hold_min_s: float = field(default_factory=lambda: _float("CHURN_HOLD_MIN_S", 1.0))
    churn_hold_max_s: float = field(default_factory=lambda: _float("CHURN_HOLD_MAX_S", 5.0))
    churn_pause_min_s: float = field(default_factory=lambda: _float("CHURN_PAUSE_MIN_S", 0.2))
    churn_pause_max_s: float = field(default_factory=lambda: _float("CHURN_PAUSE_MAX_S", 1.0))
    # ChurnUsers of one worker share this many rooms.
    churn_rooms: int = field(default_factory=lambda: _int("CHURN_ROOMS", 10))
    # Room codes: <prefix>-<scenario>-<random>; at most 16 characters of prefix.
    room_prefix: str = field(default_factory=lambda: os.environ.get("ROOM_PREFIX", "lt")[:16])

    # --- client behaviour -------------------------------------------------------------
    # An expected `state` / `payload` not there after this long is lost (a failure).
    loss_timeout_s: float = field(default_factory=lambda: _float("LOSS_TIMEOUT_S", 5.0))
    connect_timeout_s: float = field(default_factory=lambda: _float("CONNECT_TIMEOUT_S", 10.0))
    # After a close the client tries to come back for this long before giving up.
    reconnect_deadline_s: float = field(
        default_factory=lambda: _float("RECONNECT_DEADLINE_S", 30.0)
    )
    # First reconnect delay after a 1012: uniform in [min, max] (jitter), then doubling.
    reconnect_jitter_min_s: float = field(
        default_factory=lambda: _float("RECONNECT_JITTER_MIN_S", 0.05)
    )
    reconnect_jitter_max_s: float = field(
        default_factory=lambda: _float("RECONNECT_JITTER_MAX_S", 0.5)
    )
    # wss:// against a cluster with a self-signed certificate.
    ws_insecure: bool = field(default_factory=lambda: _bool("WS_INSECURE", False))

    # --- thresholds (exit code) ---------------------------------------------------------
    threshold_p99_ms: float = field(default_factory=lambda: _float("THRESHOLD_P99_MS", 500.0))
    # The players' own latency is held tighter than the spectators' fan-out.
    threshold_move_p99_ms: float = field(
        default_factory=lambda: _float("THRESHOLD_MOVE_P99_MS", 200.0)
    )
    # Drained (1012) sockets that never came back within RECONNECT_DEADLINE_S.
    max_not_back: int = field(default_factory=lambda: _int("MAX_NOT_BACK", 0))
    max_lost: int = field(default_factory=lambda: _int("MAX_LOST", 0))
    max_fail_ratio: float = field(default_factory=lambda: _float("MAX_FAIL_RATIO", 0.01))
    # Where the master (or a standalone run) writes its summary as JSON; empty: nowhere.
    summary_json: str = field(default_factory=lambda: os.environ.get("LOADTEST_SUMMARY_JSON", ""))


CONFIG = Config()
