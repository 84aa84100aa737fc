"""What one sent frame must bring: which members must receive it, and how each outcome counts.

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
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, InitVar, dataclass, field

from gevent.event import Event  # type: ignore[import-untyped]

from gameclient.codec import Frame

from .config import CONFIG
from .metrics import COUNTERS, LostDelivery, MoveFailed, Reporter
from .wsclient import GameSocket

log = logging.getLogger("loadtest")
AWAY = -1  # a receiver that was not connected when the frame was sent


class Resend(Exception):
    """The sender's connection closed under the frame and it never landed: send again."""


@dataclass(eq=False)
class Expectation:
    """One frame sent by `sender` that every socket in `receivers` (and the sender) must get.

    `heals`: the frame is a `state`, so a member that reconnects gets it in its greeting
    (a reconnected member that still lacks it has lost it). Relay payloads do not heal: a
    member that was away while one was sent cannot get it and is not counted.
    `probe`: after the timeout with nobody having seen the frame, ask the server whether
    it applied it (a `sync`): applied means the broadcast was lost for everyone.
    """

    sender: GameSocket
    receivers: InitVar[list[GameSocket]]
    _: KW_ONLY
    matches: Callable[[Frame], bool]
    name_for: Callable[[GameSocket], str]
    sender_name: str
    reporter: Reporter
    heals: bool
    probe: Callable[[GameSocket], Frame | None] | None = None
    # receiver -> the epoch of its connection when the frame was sent (or AWAY)
    waiting: dict[GameSocket, int] = field(init=False)
    sender_epoch: int = field(init=False)
    sender_seen: bool = field(init=False, default=False)
    landed: bool = field(init=False, default=False)  # someone saw it: the server accepted it
    error: str | None = field(init=False, default=None)
    sent_at: float = field(init=False, default=0.0)
    sent_wall: float = field(init=False, default=0.0)
    resent: bool = field(init=False, default=False)
    closed: bool = field(init=False, default=False)  # past the timeout: late frames no longer count
    done: Event = field(init=False, default_factory=Event)
    # deliveries over THRESHOLD_P99_MS: (ms, replica)
    slow: list[tuple[float, str | None]] = field(init=False, default_factory=list)

    def __post_init__(self, receivers: list[GameSocket]) -> None:
        self.waiting = {sock: sock.epoch if sock.ready.is_set() else AWAY for sock in receivers}
        self.sender_epoch = self.sender.epoch

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
