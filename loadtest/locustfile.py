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

import functools
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

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
GAME_PAUSE = between(CONFIG.game_pause_min_s, CONFIG.game_pause_max_s)
CHURN_PAUSE = between(CONFIG.churn_pause_min_s, CONFIG.churn_pause_max_s)
RELAY_PAUSE = between(CONFIG.relay_pause_min_s, CONFIG.relay_pause_max_s)
R = TypeVar("R", bound=Room)


class RoomUser(User, Generic[R]):
    """A Locust user holding at most one room; its sockets close when the user stops."""

    abstract = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.room: R | None = None

    def drop_room(self) -> None:
        close_quietly(self.room)
        self.room = None

    def on_stop(self) -> None:
        close_quietly(self.room, quick=True)


U = TypeVar("U", bound=RoomUser[Any])


def scenario(
    tag_name: str, failure_name: str | None, *, keep_room: bool
) -> Callable[[Callable[[U], None]], Callable[[U], None]]:
    """The user's one task, tagged `tag_name`. An exception in it is reported (under
    `failure_name` when a move or relay was refused or never confirmed) rather than
    raised, and the room is closed and dropped; `keep_room=False`: after every task."""

    def decorate(body: Callable[[U], None]) -> Callable[[U], None]:
        @functools.wraps(body)
        def run(user: U) -> None:
            try:
                body(user)
            except Exception as exc:
                summary.report_scenario_failure(user.room, failure_name, exc)
                if keep_room:
                    user.drop_room()
            finally:
                if not keep_room:
                    user.drop_room()

        tagged: Callable[[U], None] = tag(tag_name)(task(run))
        return tagged

    return decorate


class MatchUser(RoomUser[GameRoom]):
    """One game per task: two players, a fresh room, played to the end."""

    weight, wait_time = CONFIG.match_weight, GAME_PAUSE

    @scenario("match", MOVE, keep_room=False)
    def play_one_game(self) -> None:
        room = self.room = GameRoom(self.environment, "m", self.host)
        room.seat_players()
        room.play_game()


class FanoutUser(RoomUser[GameRoom]):
    """One room: a playing pair and many spectators, one game after another (rematch)."""

    weight, wait_time = CONFIG.fanout_weight, GAME_PAUSE

    def open_room(self) -> GameRoom:
        room = self.room = GameRoom(self.environment, "f", self.host)
        room.seat_players()
        room.open_many("spectator", CONFIG.spectators_per_room)
        return room

    @scenario("fanout", MOVE, keep_room=True)
    def play_watched_game(self) -> None:
        room = self.room
        if room is None:
            room = self.open_room()
        elif room.best_state().get("status") != "playing":
            room.rematch()
        room.play_game()


class ChurnUser(RoomUser[Room]):
    """Connect, get welcome + state, stay a little, leave; again."""

    weight, wait_time = CONFIG.churn_weight, CHURN_PAUSE

    @scenario("churn", None, keep_room=False)
    def visit(self) -> None:
        room = self.room = Room(self.environment, "c", self.host, code=random.choice(CHURN_CODES))
        room.open("visitor")
        self.wait_hold()

    def wait_hold(self) -> None:
        gevent.sleep(random.uniform(CONFIG.churn_hold_min_s, CONFIG.churn_hold_max_s))


class RelayUser(RoomUser[RelayRoom]):
    """The seed tutorial's relay across replicas: {"data": X} -> {"payload": X}."""

    weight, wait_time = CONFIG.relay_weight, RELAY_PAUSE

    def open_room(self) -> RelayRoom:
        room = self.room = RelayRoom(self.environment, "r", self.host)
        room.open_many("member", max(CONFIG.relay_members, 2))
        return room

    @scenario("relay", RELAY, keep_room=True)
    def relay(self) -> None:
        room = self.room if self.room is not None else self.open_room()
        room.relay_once()


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
