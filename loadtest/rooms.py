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

A frame the sender wrote into a connection that closed under it (a 1012) may or may not
have landed: when the sender's fresh `state` lacks it, the same frame is sent again (a
move keeps its `version`, so the server's compare-and-swap refuses a duplicate with
`stale_version`, which is then checked with a `sync`). Deliveries of a frame sent more
than once are not timed (which attempt landed is unknowable); losses still count.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Callable
from typing import Any

import gevent  # type: ignore[import-untyped]
import gevent.pool  # type: ignore[import-untyped]
from gevent.event import Event  # type: ignore[import-untyped]

from gameclient import codec
from gameclient.codec import Frame

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
from .wsclient import GameSocket, Reporter, close_all, ws_base

log = logging.getLogger("loadtest")
AWAY = -1  # a receiver that was not connected when the frame was sent


class Resend(Exception):
    """The sender's connection closed under the frame and it never landed: send again."""


def room_code(kind: str) -> str:
    return f"{CONFIG.room_prefix}-{kind}-{secrets.token_hex(6)}"


class Expectation:
    """One frame sent by `sender` that every socket in `receivers` (and the sender) must get.

    `heals`: the frame is a `state`, so a member that reconnects gets it in its greeting
    (a reconnected member that still lacks it has lost it). Relay payloads do not heal: a
    member that was away while one was sent cannot get it and is not counted.
    `probe`: after the timeout with nobody having seen the frame, ask the server whether
    it applied it (a `sync`): applied means the broadcast was lost for everyone.
    """

    def __init__(
        self,
        sender: GameSocket,
        receivers: list[GameSocket],
        *,
        matches: Callable[[Frame], bool],
        name_for: Callable[[GameSocket], str],
        sender_name: str,
        reporter: Reporter,
        heals: bool,
        probe: Callable[[GameSocket], Frame | None] | None = None,
    ) -> None:
        self.sender = sender
        self.matches = matches
        self.name_for = name_for
        self.sender_name = sender_name
        self.reporter = reporter
        self.heals = heals
        self.probe = probe
        self.waiting: dict[GameSocket, int] = {
            sock: sock.epoch if sock.ready.is_set() else AWAY for sock in receivers
        }
        self.sender_epoch = sender.epoch
        self.sender_seen = False
        self.landed = False  # someone saw it: the server accepted it
        self.error: str | None = None
        self.sent_at = 0.0
        self.sent_wall = 0.0
        self.resent = False
        self.closed = False  # past the timeout: late frames no longer count
        self.done = Event()
        self.slow: list[tuple[float, str | None]] = []  # over THRESHOLD_P99_MS: (ms, replica)

    def offer(self, sock: GameSocket, frame: Frame, at: float, epoch: int) -> None:
        if self.closed or not self.matches(frame):
            return
        self.landed = True
        if sock is self.sender:
            self.sender_seen = True
        sent_epoch = self.waiting.pop(sock, None)
        if sent_epoch is not None:
            if sent_epoch == epoch and not self.resent:
                ms = (at - self.sent_at) * 1000
                self.reporter.success(self.name_for(sock), ms, replica=sock.server)
                if ms > CONFIG.threshold_p99_ms:
                    self.slow.append((ms, sock.server))
            else:
                COUNTERS.resynced += 1
        if self.sender_seen and not self.waiting:
            self.done.set()

    def refused(self, code: str) -> None:
        if self.landed:
            return  # a repeated send was refused (stale_version ...): the first one counts
        self.error = code
        self.done.set()

    def resend(self, sender_epoch: int) -> None:
        """Before sending the same frame again: deliveries from now on are not timed (the
        sender's connection broke under it, which attempt landed is unknowable)."""
        self.resent = True
        self.error = None
        self.sender_epoch = sender_epoch
        self.done.clear()

    def settle(self) -> None:
        """Wait for every delivery; report losses. Raises Resend or MoveFailed."""
        timeout = CONFIG.loss_timeout_s
        deadline = self.sent_at + timeout
        while time.perf_counter() < deadline:
            if self.done.wait(timeout=0.1):
                if self.error is None or self.landed:
                    break
                # Refused. After a resend the first attempt may have landed late (the
                # server still read it after its 1012): ask, as the protocol's CAS intends.
                if self.resent and self._applied() is not None:
                    self.error = None
                    self.done.clear()
                    continue
                raise MoveFailed(self.error)
            sender = self.sender
            if (
                sender.epoch != self.sender_epoch
                and sender.ready.is_set()
                and not self.landed
                and self.error is None
            ):
                # The sender came back and its fresh state lacks the frame: it never landed.
                raise Resend
        self.closed = True
        if self.slow:
            replicas = sorted({str(server) for _, server in self.slow})
            self._log(
                f"slow: {len(self.slow)} deliveries over {CONFIG.threshold_p99_ms:g} ms "
                f"(max {max(ms for ms, _ in self.slow):.0f} ms) to members on {', '.join(replicas)}"
            )
        if not self.landed:
            if self.sender.epoch != self.sender_epoch:
                raise Resend
            if self.probe is not None:
                state = self._applied()
                if state is None:
                    self._log("not applied", state=self.sender.last_state)
                    raise MoveFailed(f"not applied within {timeout:g}s")
                self._log("applied but nobody got the broadcast", state=state)
            else:
                self._log("nobody got the broadcast")
        waited = (time.perf_counter() - self.sent_at) * 1000
        lost = LostDelivery(f"not received within {timeout:g}s")
        for sock, sent_epoch in self.waiting.items():
            if sock.closing:
                continue
            stayed = sent_epoch == sock.epoch and sock.ready.is_set()
            came_back = self.heals and sock.ready.is_set()
            if not (stayed or came_back):
                COUNTERS.resynced += 1  # away when it went out; a later state heals it
                continue
            self._log("lost", receiver=sock)
            self.reporter.failure(self.name_for(sock), waited, lost, replica=sock.server)
        sender = self.sender
        if not self.sender_seen and sender.ready.is_set() and not sender.closing:
            self._log("lost (sender's own copy)", receiver=sender)
            self.reporter.failure(self.sender_name, waited, lost, replica=sender.server)

    def _applied(self) -> Frame | None:
        """The server's state if it shows the frame applied (a `sync`), else None."""
        if self.probe is None:
            return None
        was_closed, self.closed = self.closed, True  # the sync reply is no delivery
        try:
            state = self.probe(self.sender)
        finally:
            self.closed = was_closed
        if state is None or not self.matches(state):
            return None
        self.landed = True
        self.sender_seen = True
        return state

    def _log(
        self, what: str, receiver: GameSocket | None = None, state: Frame | None = None
    ) -> None:
        """Enough to find the moment in the replicas' logs."""
        log.warning(
            "%s %s: sent %s via %s (epoch %s->%s)%s%s",
            self.reporter.context.get("room"),
            what,
            time.strftime("%H:%M:%S", time.localtime(self.sent_wall))
            + f".{int(self.sent_wall * 1000) % 1000:03d}",
            self.sender.server,
            self.sender_epoch,
            self.sender.epoch,
            f"; receiver {receiver.role} on {receiver.server}" if receiver else "",
            f"; server state v{state.get('version')}" if state else "",
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
