"""Rooms as the scenarios see them: sockets of one room code, and what they expect to receive.

A move (or a relay message) sets up an `Expectation`: which member sockets must receive
which frame. Each socket's reader greenlet offers its frames; the first matching frame a
member reads is its delivery, timed from the moment the sender wrote its frame. Outcomes:

- delivered over the connection that was open when the frame was sent: a success with
  its latency (`ws move->opponent`, `ws fanout`, `ws relay`);
- delivered only through the `state` a reconnect brought (the member was away, e.g. in a
  1012 storm): healed by resync, counted in `resynced`, neither a latency nor a loss;
- not delivered within LOSS_TIMEOUT_S to a member that was connected: a `LostDelivery`
  failure under the same name (the sender's own copy counts too: `ws move` / `ws relay`).

A frame the sender wrote into a connection that then closed before the server read it
never landed (nobody sees it, the sender's fresh `state` lacks it): it is sent again and
nothing is reported for the lost attempt.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.pool
from gevent.event import Event

from .config import CONFIG
from .metrics import (
    CONNECT_TO_STATE,
    COUNTERS,
    FANOUT,
    MOVE,
    MOVE_TO_OPPONENT,
    RELAY,
    ConnectFailed,
    JoinFailed,
    LostDelivery,
    MoveFailed,
)
from .wsclient import Frame, GameSocket, Reporter, close_all, ws_base

AWAY = -1  # a receiver that was not connected when the frame was sent


class Resend(Exception):
    """The sender's connection closed under the frame and it never landed: send again."""


def room_code(kind: str) -> str:
    return f"{CONFIG.room_prefix}-{kind}-{secrets.token_hex(6)}"


class Expectation:
    """One frame sent by `sender` that every socket in `receivers` (and the sender) must get."""

    def __init__(
        self,
        sender: GameSocket,
        receivers: list[GameSocket],
        *,
        matches: Callable[[Frame], bool],
        name_for: Callable[[GameSocket], str],
        sender_name: str,
        reporter: Reporter,
    ) -> None:
        self.sender = sender
        self.matches = matches
        self.name_for = name_for
        self.sender_name = sender_name
        self.reporter = reporter
        self.waiting: dict[GameSocket, int] = {
            sock: sock.epoch if sock.ready.is_set() else AWAY for sock in receivers
        }
        self.sender_epoch = sender.epoch
        self.sender_seen = False
        self.landed = False  # someone saw it: the server accepted it
        self.error: str | None = None
        self.sent_at = 0.0
        self.done = Event()

    def offer(self, sock: GameSocket, frame: Frame, at: float, epoch: int) -> None:
        if not self.matches(frame):
            return
        self.landed = True
        if sock is self.sender:
            self.sender_seen = True
        sent_epoch = self.waiting.pop(sock, None)
        if sent_epoch is not None:
            if sent_epoch == epoch:
                name = self.name_for(sock)
                self.reporter.success(name, (at - self.sent_at) * 1000, replica=sock.server)
            else:
                COUNTERS.resynced += 1
        if self.sender_seen and not self.waiting:
            self.done.set()

    def refused(self, code: str) -> None:
        self.error = code
        self.done.set()

    def settle(self) -> None:
        """Wait for every delivery; report losses. Raises Resend or MoveFailed."""
        deadline = self.sent_at + CONFIG.loss_timeout_s
        while not self.done.wait(timeout=0.1):
            sender = self.sender
            if (
                sender.epoch != self.sender_epoch
                and sender.ready.is_set()
                and not self.landed
                and self.error is None
            ):
                # The sender came back and its fresh state lacks the frame: it never landed.
                raise Resend
            if time.perf_counter() >= deadline:
                break
        if self.error is not None and not self.landed:
            raise MoveFailed(self.error)
        if not self.landed:
            if self.sender.epoch != self.sender_epoch:
                raise Resend
            raise MoveFailed("never confirmed")
        waited = (time.perf_counter() - self.sent_at) * 1000
        for sock, _epoch in self.waiting.items():
            if sock.closing:
                continue
            if not sock.ready.is_set():
                COUNTERS.resynced += 1  # away now; its next state heals it
                continue
            self.reporter.failure(
                self.name_for(sock),
                waited,
                LostDelivery(f"not received within {CONFIG.loss_timeout_s:g}s"),
                replica=sock.server,
            )
        if not self.sender_seen and self.sender.ready.is_set() and not self.sender.closing:
            self.reporter.failure(
                self.sender_name,
                waited,
                LostDelivery(f"sender's own copy not received within {CONFIG.loss_timeout_s:g}s"),
                replica=self.sender.server,
            )


class Room:
    """The sockets one Locust user holds in one room code."""

    def __init__(
        self, environment: Any, kind: str, host: str | None, code: str | None = None
    ) -> None:
        self.code = code or room_code(kind)
        self.url = f"{ws_base(host)}/ws/game/{self.code}"
        self.reporter = Reporter(environment, room=self.code, scenario=kind)
        self.sockets: list[GameSocket] = []
        self.expecting: Expectation | None = None

    def open(self, role: str) -> GameSocket:
        """A new member: connected, greeted, and its `ws connect->state` reported."""
        sock = GameSocket(self.url, reporter=self.reporter, role=role, listener=self.on_frame)
        self.sockets.append(sock)
        started = time.perf_counter()
        try:
            ms = sock.connect()
        except ConnectFailed as exc:
            self.reporter.failure(CONNECT_TO_STATE, (time.perf_counter() - started) * 1000, exc)
            raise
        self.reporter.success(CONNECT_TO_STATE, ms, replica=sock.server)
        return sock

    def open_many(self, role: str, count: int, concurrency: int = 10) -> list[GameSocket]:
        """`count` members, `concurrency` connecting at a time; failed ones are left out."""
        pool = gevent.pool.Pool(concurrency)
        jobs = [pool.spawn(self.open, role) for _ in range(count)]
        gevent.joinall(jobs)
        return [job.value for job in jobs if job.successful()]

    def on_frame(self, sock: GameSocket, frame: Frame, at: float, epoch: int) -> bool:
        expecting = self.expecting
        if expecting is None:
            return False
        if frame.get("type") == "error" and sock is expecting.sender:
            expecting.refused(str(frame.get("code")))
            return True
        expecting.offer(sock, frame, at, epoch)
        return False

    def send_expecting(self, expectation: Expectation, message: Frame) -> None:
        """Send `message` and settle `expectation`; again (fresh) while it never landed."""
        self.expecting = expectation
        try:
            sender = expectation.sender
            if not sender.ready.wait(timeout=CONFIG.reconnect_deadline_s):
                raise MoveFailed("sender never came back")
            expectation.sent_at = time.perf_counter()
            if not sender.send(message, timeout=0):
                raise Resend
            expectation.settle()
        finally:
            self.expecting = None

    def close(self, timeout: float = 2.0) -> None:
        close_all(self.sockets, timeout)


def _cell_shows(cell: int, mark: str, min_version: int) -> Callable[[Frame], bool]:
    def matches(frame: Frame) -> bool:
        if frame.get("type") != "state":
            return False
        board = frame.get("board")
        version = frame.get("version")
        return (
            isinstance(board, list)
            and len(board) == 9
            and board[cell] == mark
            and isinstance(version, int)
            and version >= min_version
        )

    return matches


class GameRoom(Room):
    """Two seated players (and, for fan-out, spectators) playing whole games."""

    def __init__(self, environment: Any, kind: str, host: str | None) -> None:
        super().__init__(environment, kind, host)
        self.players: dict[str, GameSocket] = {}

    def seat_players(self) -> None:
        for name in ("ana", "bo"):
            sock = self.open("player")
            try:
                mark = sock.join(f"{name}-{secrets.token_hex(2)}")
            except Exception as exc:
                raise JoinFailed(type(exc).__name__ + (f" {exc}" if str(exc) else "")) from exc
            self.players[mark] = sock

    def best_state(self) -> Frame:
        """The players' highest-version state."""
        states = [s.state for s in self.players.values() if s.state is not None]
        return max(states, key=lambda s: int(s.get("version", -1)))

    def wait_state(self, accept: Callable[[Frame], bool], what: str) -> Frame:
        deadline = time.perf_counter() + CONFIG.loss_timeout_s
        while time.perf_counter() < deadline:
            state = self.best_state()
            if accept(state):
                return state
            gevent.sleep(0.02)
        raise MoveFailed(f"no state where {what}")

    def receiver_name(self, sock: GameSocket) -> str:
        return MOVE_TO_OPPONENT if sock.role == "player" else FANOUT

    def play_move(self, state: Frame) -> None:
        mark = str(state["turn"])
        mover = self.players[mark]
        cell = random.choice([i for i, c in enumerate(state["board"]) if c is None])
        version = int(state["version"])
        receivers = [s for s in self.sockets if s is not mover and not s.dead]
        for _attempt in range(3):
            expectation = Expectation(
                mover,
                receivers,
                matches=_cell_shows(cell, mark, version + 1),
                name_for=self.receiver_name,
                sender_name=MOVE,
                reporter=self.reporter,
            )
            try:
                self.send_expecting(expectation, {"type": "move", "cell": cell, "version": version})
            except Resend:
                continue
            return
        raise MoveFailed("never landed after 3 sends")

    def play_game(self) -> None:
        """Play the current game to its end with think time, random legal moves."""
        state = self.wait_state(lambda s: s.get("status") == "playing", "the game is on")
        while state.get("status") == "playing":
            gevent.sleep(random.uniform(CONFIG.think_min_s, CONFIG.think_max_s))
            self.play_move(state)
            state = self.best_state()

    def rematch(self) -> None:
        """Both players ask; wait for the fresh board."""
        over = int(self.best_state()["version"])
        for sock in self.players.values():
            if not sock.send({"type": "rematch"}):
                raise MoveFailed("rematch not sent")
        self.wait_state(
            lambda s: (
                s.get("status") == "playing"
                and int(s.get("version", -1)) > over
                and all(c is None for c in s.get("board", [0]))
            ),
            "a new game started",
        )


class RelayRoom(Room):
    """Members relaying `{"data": X}`; every other member must get `{"payload": X}`."""

    def relay_once(self) -> None:
        members = [s for s in self.sockets if not s.dead]
        sender = random.choice(members)
        for _attempt in range(3):
            rid = secrets.token_hex(6)
            expectation = Expectation(
                sender,
                [s for s in members if s is not sender],
                matches=lambda f, rid=rid: (
                    isinstance(f.get("payload"), dict) and f["payload"].get("lt") == rid
                ),
                name_for=lambda _sock: RELAY,
                sender_name=RELAY,
                reporter=self.reporter,
            )
            try:
                self.send_expecting(expectation, {"data": {"lt": rid}})
            except Resend:
                continue
            return
        raise MoveFailed("relay never landed after 3 sends")


def close_quietly(room: Room | None, *, quick: bool = False) -> None:
    """Close every socket of `room`; `quick` (the run is stopping): barely wait for the
    server's close frames, the master takes the workers' last reports 0.5 s after."""
    if room is not None:
        room.close(timeout=0.1 if quick else 2.0)


__all__ = ["GameRoom", "RelayRoom", "Room", "close_quietly"]
