"""Rooms as the scenarios see them: sockets of one room code, and what they expect to receive.

A `Room` opens its members' sockets and sends frames that set up an `Expectation`
(loadtest/expectation.py: which members must receive the frame, and how each delivery,
heal or loss counts), sending a frame again when the sender's connection broke under it
before it landed. `GameRoom` seats two players and plays whole games (`MatchUser`,
`FanoutUser`); `RelayRoom` relays `{"data": X}` among its members (`RelayUser`).
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable
from typing import Any

import gevent  # type: ignore[import-untyped]
import gevent.pool  # type: ignore[import-untyped]

from gameclient import codec
from gameclient.codec import Frame

from .config import CONFIG
from .expectation import Expectation, Resend
from .metrics import (
    CONNECT_TO_STATE,
    FANOUT,
    MOVE,
    MOVE_TO_OPPONENT,
    RELAY,
    ConnectFailed,
    JoinFailed,
    MoveFailed,
    Reporter,
)
from .wsclient import GameSocket, close_all, ws_base


def room_code(kind: str) -> str:
    return f"{CONFIG.room_prefix}-{kind}-{secrets.token_hex(6)}"


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
        if codec.kind(frame) == "error" and sock is expecting.sender:
            expecting.refused(str(frame.get("code")))
            return True
        expecting.offer(sock, frame, at, epoch)
        return False

    def send_expecting(self, expectation: Expectation, message: Frame, attempts: int = 3) -> None:
        """Send `message` and settle `expectation`; the same frame again while the sender's
        connection broke under it before it landed (a move carries its version: the
        server's compare-and-swap turns a duplicate into `stale_version`)."""
        self.expecting = expectation
        sender = expectation.sender
        try:
            for attempt in range(attempts):
                if not sender.ready.wait(timeout=CONFIG.reconnect_deadline_s):
                    raise MoveFailed("sender never came back")
                if attempt:
                    expectation.resend(sender.epoch)
                expectation.sent_at = time.perf_counter()
                expectation.sent_wall = time.time()
                try:
                    if not sender.send(message, timeout=0):
                        raise Resend
                    expectation.settle()
                except Resend:
                    continue
                return
            raise MoveFailed(f"never landed after {attempts} sends")
        finally:
            self.expecting = None

    def close(self, timeout: float = 2.0) -> None:
        close_all(self.sockets, timeout)


def _cell_shows(cell: int, mark: str, min_version: int) -> Callable[[Frame], bool]:
    def matches(frame: Frame) -> bool:
        if codec.kind(frame) != "state":
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
        expectation = Expectation(
            mover,
            [s for s in self.sockets if s is not mover and not s.dead],
            matches=_cell_shows(cell, mark, version + 1),
            name_for=self.receiver_name,
            sender_name=MOVE,
            reporter=self.reporter,
            heals=True,
            probe=lambda sock: sock.sync(),
        )
        self.send_expecting(expectation, codec.move(cell, version))

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
            if not sock.send(codec.rematch()):
                raise MoveFailed("rematch not sent")
        self.wait_state(
            lambda s: (
                s.get("status") == "playing"
                and int(s.get("version", -1)) > over
                and all(c is None for c in s.get("board", [0]))
            ),
            "a new game started",
        )


def _payload_is(rid: str) -> Callable[[Frame], bool]:
    def matches(frame: Frame) -> bool:
        payload = frame.get("payload")
        return isinstance(payload, dict) and payload.get("lt") == rid

    return matches


class RelayRoom(Room):
    """Members relaying `{"data": X}`; every other member must get `{"payload": X}`."""

    def relay_once(self) -> None:
        members = [s for s in self.sockets if not s.dead]
        sender = random.choice(members)
        rid = secrets.token_hex(6)
        expectation = Expectation(
            sender,
            [s for s in members if s is not sender],
            matches=_payload_is(rid),
            name_for=lambda _sock: RELAY,
            sender_name=RELAY,
            reporter=self.reporter,
            heals=False,
        )
        self.send_expecting(expectation, codec.relay({"lt": rid}))


def close_quietly(room: Room | None, *, quick: bool = False) -> None:
    """Close every socket of `room`; `quick` (the run is stopping): barely wait for the
    server's close frames, the master takes the workers' last reports 0.5 s after."""
    if room is not None:
        room.close(timeout=0.1 if quick else 2.0)


__all__ = ["GameRoom", "RelayRoom", "Room", "close_quietly"]
