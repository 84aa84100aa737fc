"""A game WebSocket for Locust: `websocket-client` plus one receiving greenlet per connection.

Locust monkey-patches the standard library with gevent before this module is imported, so
`websocket-client`'s blocking socket calls yield to other greenlets. Each `GameSocket`:

- connects through the load balancer and counts as open once it has read `welcome` and the
  first `state` (docs/protocol.md: broadcasts already flow then);
- reads every frame in its own greenlet and stamps it with `time.perf_counter()` the moment
  it is read, so latencies do not include the time the user's greenlet takes to wake up;
- keeps the `state` with the highest version (the later one on a tie);
- comes back by itself after a close it did not ask for, like a good client: 1012 (drain)
  with jittered backoff and the seat token, anything else too but reported as a failure.
  `epoch` grows with every new underlying connection, so callers can tell whether a frame
  came over the connection that was open when they sent something.
"""

from __future__ import annotations

import contextlib
import random
import struct
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import gevent  # type: ignore[import-untyped]
import websocket  # type: ignore[import-not-found]
from gevent.event import AsyncResult, Event  # type: ignore[import-untyped]

from gameclient import codec
from gameclient.codec import CLOSE_ABNORMAL, CLOSE_DRAINING, Frame

from .config import CONFIG
from .metrics import (
    BACK_AFTER_1012,
    COUNTERS,
    DISCONNECT,
    SERVER_ERROR,
    ConnectFailed,
    NotBack,
    Reporter,
    UnexpectedClose,
    UnexpectedError,
)

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def ws_base(host: str | None) -> str:
    """`ws://` / `wss://` base URL from Locust's --host (http(s):// is accepted too)."""
    base = (host or "ws://127.0.0.1:8000").rstrip("/")
    if base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    elif base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif "://" not in base:
        base = "ws://" + base
    return base


# (socket, frame, perf_counter when read, epoch of the connection it came over) -> handled?
Listener = Callable[["GameSocket", Frame, float, int], bool]


class NoAnswer(Exception):
    """The awaited frame did not come in time."""


def _get(result: AsyncResult, timeout: float, what: str) -> Any:
    """`AsyncResult.get` raising an Exception (gevent's Timeout is a BaseException)."""
    try:
        return result.get(timeout=max(timeout, 0))
    except gevent.Timeout:
        raise NoAnswer(what) from None


class _Closed(Exception):
    """The underlying connection closed before the awaited frame arrived."""

    def __init__(self, code: int) -> None:
        super().__init__(f"closed with {code}")
        self.code = code


class GameSocket:
    """One room member's connection (a player's or a spectator's), kept open until close()."""

    def __init__(
        self,
        url: str,
        *,
        reporter: Reporter,
        role: str,
        listener: Listener | None = None,
    ) -> None:
        self.url = url
        self.reporter = reporter
        self.role = role
        self.listener = listener
        self.ws: websocket.WebSocket | None = None
        self.epoch = 0
        self.server: str | None = None  # replica named by the latest welcome
        self.state: Frame | None = None  # highest-version state seen
        self.last_state: Frame | None = None  # the state read last, whatever its version
        self.states_read = 0
        self.name: str | None = None
        self.mark: str | None = None
        self.token: str | None = None
        self.ready = Event()  # open, greeted and (if seated) seat reclaimed
        self.closing = False
        self.dead = False  # gave up coming back
        self._ever_ready = False
        self._recovering = False
        self._recovering_from = 0
        self._counted_epoch = 0
        self._greeting: AsyncResult = AsyncResult()
        self._joining: AsyncResult = AsyncResult()
        self._welcomed = False
        self._join_pending = False
        self._reader: gevent.Greenlet | None = None
        self._recovery: gevent.Greenlet | None = None

    # --- connecting ----------------------------------------------------------------

    def connect(self) -> float:
        """Open the connection (retrying a refused or drained attempt until the connect
        timeout); milliseconds from the first attempt until welcome + state were read."""
        started = time.perf_counter()
        deadline = started + CONFIG.connect_timeout_s
        delay = 0.05
        while True:
            try:
                greeted_at = self._establish(deadline)
            except Exception as exc:
                if self.closing or time.perf_counter() + delay >= deadline:
                    raise ConnectFailed(type(exc).__name__) from exc
                gevent.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, 2.0)
                continue
            self._ever_ready = True
            self.ready.set()
            return (greeted_at - started) * 1000

    def _open(self, timeout: float) -> websocket.WebSocket:
        options: dict[str, Any] = {
            "timeout": max(timeout, 0.1),
            "suppress_origin": True,  # a non-browser client: no Origin header at all
            "enable_multithread": True,  # gevent-patched locks: the reader pongs, we send
            "skip_utf8_validation": True,
        }
        parts = urlsplit(self.url)
        if parts.hostname in LOOPBACK:
            options["http_no_proxy"] = list(LOOPBACK)
        if parts.scheme == "wss" and CONFIG.ws_insecure:
            import ssl

            options["sslopt"] = {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
        ws = websocket.create_connection(self.url, **options)
        ws.settimeout(None)  # the reader blocks until a frame comes; the server pings
        return ws

    def _establish(self, deadline: float) -> float:
        """One connection: open, start its reader, wait for welcome + state and, when this
        socket holds a seat, reclaim it with the token. Returns when it was greeted."""
        ws = self._open(deadline - time.perf_counter())
        self._greeting = AsyncResult()
        self._joining = AsyncResult()
        self._join_pending = False
        self._welcomed = False
        self.epoch += 1
        self.ws = ws
        self._reader = gevent.spawn(self._read, ws, self.epoch)
        try:
            greeted_at: float = _get(
                self._greeting, deadline - time.perf_counter(), "no welcome + state"
            )
            if self.token is not None and self.name is not None:
                self._join_pending = True
                self._send_now(codec.join(self.name, self.token))
                _get(self._joining, deadline - time.perf_counter(), "seat not reclaimed")
        except BaseException:
            self._abort(ws)
            raise
        return greeted_at

    # --- reading ---------------------------------------------------------------------

    def _read(self, ws: websocket.WebSocket, epoch: int) -> None:
        code = CLOSE_ABNORMAL
        try:
            while True:
                opcode, frame = ws.recv_data_frame(False)
                at = time.perf_counter()
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    self._on_frame(codec.decode(frame.data), at, epoch)
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    data = frame.data or b""
                    code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                    break
        except gevent.GreenletExit:
            pass
        except Exception:
            code = CLOSE_ABNORMAL
        finally:
            with contextlib.suppress(Exception):
                ws.shutdown()
            self._on_close(epoch, code)

    def _on_frame(self, frame: Frame, at: float, epoch: int) -> None:
        kind = codec.kind(frame)
        if kind == "state":
            self.last_state = frame
            self.states_read += 1
            if codec.newer(frame, self.state):
                self.state = frame
            if self._welcomed and epoch == self.epoch and not self._greeting.ready():
                if self._counted_epoch != epoch:
                    self._counted_epoch = epoch
                    COUNTERS.opened()
                self._greeting.set(at)
        elif kind == "welcome":
            self.server = frame.get("server")
            self._welcomed = True
        elif kind == "joined":
            self.mark, self.token = frame.get("mark"), frame.get("token")
            if self._join_pending:
                self._join_pending = False
                self._joining.set(frame)
        elif kind == "error" and self._join_pending:
            # The answer to our join (room_full, bad_token, ...): the joiner decides.
            self._join_pending = False
            self._joining.set_exception(UnexpectedError(str(frame.get("code"))))
            return
        handled = self.listener(self, frame, at, epoch) if self.listener else False
        if kind == "error" and not handled:
            self.reporter.failure(
                SERVER_ERROR, 0, UnexpectedError(str(frame.get("code"))), replica=self.server
            )

    def _on_close(self, epoch: int, code: int) -> None:
        if self._counted_epoch == epoch:
            self._counted_epoch = 0
            COUNTERS.closed()
        if epoch != self.epoch:
            return  # an older connection, already replaced
        self.ready.clear()
        if not self._greeting.ready():
            self._greeting.set_exception(_Closed(code))
        if not self._joining.ready():
            self._joining.set_exception(_Closed(code))
        if self.closing or self._recovering or not self._ever_ready:
            return  # ours, or a retry loop that is already waiting on the result
        if code == CLOSE_DRAINING:
            COUNTERS.got_1012()
        else:
            self.reporter.failure(
                DISCONNECT, 0, UnexpectedClose(f"closed with {code}"), replica=self.server
            )
        self._recovering = True
        self._recovering_from = code
        self._recovery = gevent.spawn(self._come_back, code, time.perf_counter())

    def _come_back(self, code: int, closed_at: float) -> None:
        """Reconnect with jittered exponential backoff, reclaiming the seat if any."""
        deadline = closed_at + CONFIG.reconnect_deadline_s
        delay = random.uniform(CONFIG.reconnect_jitter_min_s, CONFIG.reconnect_jitter_max_s)
        try:
            while not self.closing:
                gevent.sleep(delay)
                try:
                    self._establish(deadline)
                except Exception as exc:
                    if self.closing:
                        return
                    if time.perf_counter() >= deadline:
                        self.dead = True
                        name = BACK_AFTER_1012 if code == CLOSE_DRAINING else DISCONNECT
                        ms = (time.perf_counter() - closed_at) * 1000
                        self.reporter.failure(name, ms, NotBack(type(exc).__name__))
                        return
                    delay = min(delay * 2, 5.0) * random.uniform(0.5, 1.0)
                    continue
                back_at = time.perf_counter()
                self.ready.set()
                if code == CLOSE_DRAINING:
                    COUNTERS.came_back()
                    self.reporter.success(
                        BACK_AFTER_1012, (back_at - closed_at) * 1000, replica=self.server
                    )
                return
        finally:
            self._recovering = False

    # --- sending ---------------------------------------------------------------------

    def _send_now(self, message: Frame) -> None:
        ws = self.ws
        if ws is None:
            raise _Closed(CLOSE_ABNORMAL)
        ws.send(codec.encode(message))

    def send(self, message: Frame, timeout: float | None = None) -> bool:
        """Send once the connection is up (waiting through a reconnect); False if it
        could not be sent (closing, gave up, or the socket broke under the send)."""
        wait = CONFIG.reconnect_deadline_s if timeout is None else timeout
        if self.closing or not self.ready.wait(timeout=wait):
            return False
        try:
            self._send_now(message)
        except Exception:
            return False
        return True

    def sync(self, timeout: float = 2.0) -> Frame | None:
        """Ask for the room's state; the next state read (None if none came in time)."""
        seen = self.states_read
        if not self.send(codec.sync(), timeout=0):
            return None
        deadline = time.perf_counter() + timeout
        while self.states_read == seen and time.perf_counter() < deadline:
            gevent.sleep(0.01)
        return self.last_state if self.states_read > seen else None

    def join(self, name: str) -> str:
        """Take a seat; returns the mark. Raises on an error frame or a timeout."""
        self.name = name
        self._joining = AsyncResult()
        self._join_pending = True
        if not self.send(codec.join(name)):
            raise ConnectFailed("join not sent")
        frame: Frame = _get(self._joining, CONFIG.loss_timeout_s, "no joined")
        return str(frame["mark"])

    # --- closing ---------------------------------------------------------------------

    def start_close(self) -> None:
        """Say goodbye (close frame 1000) without waiting; finish with finish_close()."""
        self.closing = True
        if self._recovering and self._recovering_from == CLOSE_DRAINING:
            COUNTERS.abandoned_1012 += 1
        if self._recovery is not None:
            self._recovery.kill(block=False)
        ws = self.ws
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.send_close(1000)

    def finish_close(self, timeout: float) -> None:
        """Wait up to `timeout` for the server's close, then drop the TCP connection."""
        reader = self._reader
        if reader is not None and not reader.dead:
            reader.join(timeout=max(timeout, 0))
            if not reader.dead:
                if self.ws is not None:
                    self._abort(self.ws)
                reader.kill(block=True, timeout=1)
        self.ready.clear()

    def close(self, timeout: float = 2.0) -> None:
        self.start_close()
        self.finish_close(timeout)

    @staticmethod
    def _abort(ws: websocket.WebSocket) -> None:
        with contextlib.suppress(Exception):
            ws.shutdown()


def close_all(sockets: list[GameSocket], timeout: float = 2.0) -> None:
    """Close many sockets at once: every goodbye first, then one shared wait."""
    for sock in sockets:
        sock.start_close()
    deadline = time.perf_counter() + timeout
    for sock in sockets:
        sock.finish_close(deadline - time.perf_counter())
