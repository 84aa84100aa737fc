"""Locust scenarios for tictac-fleet's persistent-connection fan-out path.

One User class per scenario; pick them by class name or by tag::

    locust -f loadtest/locustfile.py --config loadtest/locust.conf MatchUser FanoutUser
    locust -f loadtest/locustfile.py --config loadtest/locust.conf --tags churn relay

=============  =======  ==========================================================
class          tag      one Locust user is ...
=============  =======  ==========================================================
MatchUser      match    one game after another: two sockets join a fresh room and play
                        to the end with think time (`ws move->opponent`)
FanoutUser     fanout   one room: a playing pair and SPECTATORS_PER_ROOM spectators,
                        games back to back (`ws fanout` per spectator per move)
ChurnUser      churn    connect, read welcome + state (`ws connect->state`), stay a
                        little, leave, again; after a drain (1012) back (`ws 1012->back`)
RelayUser      relay    one room of RELAY_MEMBERS sockets relaying {"data": X}
                        (`ws relay`: sender -> each other member)
=============  =======  ==========================================================

Every socket of every scenario comes back after a 1012 with jittered backoff (and its
seat token) and reports `ws 1012->back`. Thresholds (THRESHOLD_P99_MS, MAX_LOST,
MAX_FAIL_RATIO) decide the exit code on the master; see loadtest/README.md.
"""

# mypy: allow-subclassing-any, allow-untyped-decorators

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import gevent  # type: ignore[import-untyped]
from locust import User, between, events, tag, task  # type: ignore[import-not-found]
from locust.runners import MasterRunner, WorkerRunner  # type: ignore[import-not-found]

# Locust puts this file's directory on sys.path; the package needs its parent.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest import summary
from loadtest.config import CONFIG
from loadtest.metrics import COUNTERS, MOVE, RELAY
from loadtest.rooms import GameRoom, RelayRoom, Room, close_quietly

# One set of churn room codes per worker process: churning sockets meet each other.
_PROCESS = f"{random.getrandbits(32):08x}"
CHURN_CODES = [f"{CONFIG.room_prefix}-c-{_PROCESS}-{i}" for i in range(max(CONFIG.churn_rooms, 1))]


class MatchUser(User):
    """One game per task: two players, a fresh room, played to the end."""

    weight = CONFIG.match_weight
    wait_time = between(CONFIG.game_pause_min_s, CONFIG.game_pause_max_s)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.room: GameRoom | None = None

    @tag("match")
    @task
    def play_one_game(self) -> None:
        self.room = GameRoom(self.environment, "m", self.host)
        try:
            self.room.seat_players()
            self.room.play_game()
        except Exception as exc:
            summary.report_scenario_failure(self.room, MOVE, exc)
        finally:
            self.room.close()
            self.room = None

    def on_stop(self) -> None:
        close_quietly(self.room, quick=True)


class FanoutUser(User):
    """One room: a playing pair and many spectators, one game after another (rematch)."""

    weight = CONFIG.fanout_weight
    wait_time = between(CONFIG.game_pause_min_s, CONFIG.game_pause_max_s)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.room: GameRoom | None = None

    @tag("fanout")
    @task
    def play_watched_game(self) -> None:
        try:
            if self.room is None:
                self.room = GameRoom(self.environment, "f", self.host)
                self.room.seat_players()
                self.room.open_many("spectator", CONFIG.spectators_per_room)
            elif self.room.best_state().get("status") != "playing":
                self.room.rematch()
            self.room.play_game()
        except Exception as exc:
            summary.report_scenario_failure(self.room, MOVE, exc)
            close_quietly(self.room)
            self.room = None

    def on_stop(self) -> None:
        close_quietly(self.room, quick=True)


class ChurnUser(User):
    """Connect, get welcome + state, stay a little, leave; again."""

    weight = CONFIG.churn_weight
    wait_time = between(CONFIG.churn_pause_min_s, CONFIG.churn_pause_max_s)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.room: Room | None = None

    @tag("churn")
    @task
    def visit(self) -> None:
        self.room = Room(self.environment, "c", self.host, code=random.choice(CHURN_CODES))
        try:
            self.room.open("visitor")
            self.wait_hold()
        except Exception as exc:
            summary.report_scenario_failure(self.room, None, exc)
        finally:
            self.room.close()
            self.room = None

    def wait_hold(self) -> None:
        gevent.sleep(random.uniform(CONFIG.churn_hold_min_s, CONFIG.churn_hold_max_s))

    def on_stop(self) -> None:
        close_quietly(self.room, quick=True)


class RelayUser(User):
    """The seed tutorial's relay across replicas: {"data": X} -> {"payload": X}."""

    weight = CONFIG.relay_weight
    wait_time = between(CONFIG.relay_pause_min_s, CONFIG.relay_pause_max_s)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.room: RelayRoom | None = None

    @tag("relay")
    @task
    def relay(self) -> None:
        try:
            if self.room is None:
                self.room = RelayRoom(self.environment, "r", self.host)
                self.room.open_many("member", max(CONFIG.relay_members, 2))
            self.room.relay_once()
        except Exception as exc:
            summary.report_scenario_failure(self.room, RELAY, exc)
            close_quietly(self.room)
            self.room = None

    def on_stop(self) -> None:
        close_quietly(self.room, quick=True)


# --- selection, counters, thresholds -------------------------------------------------


@events.init.add_listener
def _on_init(environment: Any, **_kwargs: Any) -> None:
    summary.drop_untagged_user_classes(environment)
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        events.report_to_master.add_listener(summary.attach_counters)
    elif isinstance(runner, MasterRunner):
        events.worker_report.add_listener(summary.AGGREGATE.on_worker_report)
    else:
        summary.AGGREGATE.local = COUNTERS


@events.quitting.add_listener
def _on_quitting(environment: Any, **_kwargs: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    summary.finish(environment)
