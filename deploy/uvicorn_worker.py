"""gunicorn worker class for the web replicas: uvicorn with the game's WebSocket options
and a graceful drain on SIGTERM.

The options come from the Django settings (config/settings/, which read the environment),
loaded on import with `config.asgi`'s default settings module unless
DJANGO_SETTINGS_MODULE says otherwise."""

from __future__ import annotations

import asyncio
import math
import os
import sys
import weakref
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")  # as config/asgi.py

from django.conf import settings
from gunicorn.arbiter import Arbiter
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn_worker import UvicornWorker
from websockets.extensions.base import ServerExtensionFactory
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.server import ServerProtocol

from deploy.draining import DrainingServer
from realtime.waiters import wake_first


class _Parked:
    """Futures waiting on a per-socket object, the list made only when someone waits."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] | None = None

    def _park(self) -> asyncio.Future[None]:
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        return waiter

    def _unpark(self, waiter: asyncio.Future[None]) -> bool:
        """Forget a waiter that stopped waiting; False if it had been woken already."""
        if self._waiters is not None and waiter in self._waiters:
            self._waiters.remove(waiter)
            return True
        return False


class _Inbox(_Parked):
    """What uvicorn uses of `asyncio.Queue` (put_nowait, get, empty) without its three
    deques: a short list (uvicorn pauses reading while a message waits)."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        super().__init__()
        self._items: list[Any] = []

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        wake_first(self._waiters)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    async def get(self) -> Any:
        while not self._items:
            waiter = self._park()
            try:
                await waiter
            except BaseException:
                if not self._unpark(waiter) and self._items:
                    wake_first(self._waiters)  # woken, then cancelled: pass the item on
                raise
        return self._items.pop(0)


class _Flag(_Parked):
    """`asyncio.Event` (set, clear, is_set, wait) without its deque; starts set."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        super().__init__()
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        while wake_first(waiters):
            pass

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = self._park()
        try:
            await waiter
        finally:
            self._unpark(waiter)
        return True


_local_addresses: dict[Any, Any] = {}  # the listening sockets' (host, port): a few

# Request headers that repeat from socket to socket (Host, Upgrade, User-Agent, Origin,
# Accept-*, Sec-WebSocket-Version/-Extensions...): one shared (name, value) tuple each.
_shared_headers: dict[tuple[bytes, bytes], tuple[bytes, bytes]] = {}
_SHARED_HEADERS_MAX = 1024  # then start over: a bound, not a leak
_PER_SOCKET_HEADERS = frozenset(
    {b"sec-websocket-key", b"cookie", b"authorization", b"x-forwarded-for", b"forwarded"}
)


def _share_headers(headers: list[tuple[bytes, bytes]]) -> None:
    for i, pair in enumerate(headers):
        if pair[0] in _PER_SOCKET_HEADERS or len(pair[1]) > 512:
            continue
        shared = _shared_headers.get(pair)
        if shared is not None:
            headers[i] = shared
            continue
        if len(_shared_headers) >= _SHARED_HEADERS_MAX:
            _shared_headers.clear()
        _shared_headers[pair] = pair


class _Pings:
    """Every open socket's next keepalive ping, on one timer per event loop that fires
    once a second when pings are due, instead of one `call_later` handle per socket
    (~0.7 KiB each with uvloop's timer). A ping goes out up to a second later than asked;
    the pong deadline after it is uvicorn's own (a timer that lives until the pong)."""

    _of_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pings] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.due: dict[int, dict[Any, None]] = {}  # whole second of loop.time() -> sockets
        self.timer: asyncio.TimerHandle | None = None
        self.next = math.inf

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Pings:
        pings = cls._of_loop.get(loop)
        if pings is None:
            pings = cls._of_loop[loop] = cls(loop)
        return pings

    def add(self, protocol: Any, delay: float) -> dict[Any, None]:
        """Ping `protocol` in `delay` seconds; returns the set to discard it from."""
        second = math.ceil(self.loop.time() + delay)
        sockets = self.due.get(second)
        if sockets is None:
            sockets = self.due[second] = {}
        sockets[protocol] = None
        if second < self.next:
            if self.timer is not None:
                self.timer.cancel()
            self.next = second
            self.timer = self.loop.call_at(second, self.fire)
        return sockets

    def fire(self) -> None:
        self.timer, self.next = None, math.inf
        now = self.loop.time() + 0.01  # a timer may fire a hair early
        for second in sorted(s for s in self.due if s <= now):
            for protocol in list(self.due.pop(second)):
                try:
                    protocol.send_keepalive_ping()
                except Exception as exc:  # one socket's failure is not the others'
                    self.loop.call_exception_handler(
                        {"message": "keepalive ping failed", "exception": exc}
                    )
        if self.due:
            self.next = min(self.due)
            self.timer = self.loop.call_at(self.next, self.fire)


class GameWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's `websockets-sansio` protocol, cheaper per open socket (bench/sockets.py).

    - permessage-deflate follows `settings.WS_PER_MESSAGE_DEFLATE`: off by default; when
      on, without context takeover either way, so an idle socket keeps no zlib state
      (uvicorn's own, with context takeover, keeps ~45 KiB per socket);
    - its receive queue and `writable` event without deques (four deques, ~3 KiB);
    - the handshake's request and response are let go once the socket is open (~3.5 KiB
      of headers); the ASGI scope keeps its own copy of the request headers;
    - the attributes below live in slots: uvicorn sets 37 per socket, and past 30 CPython
      gives each instance a full dict (~1.6 KiB) instead of its compact shared-key values
      (~0.4 KiB);
    - keepalive pings are scheduled on one timer per loop (`_Pings`), not one per socket;
    - the scope's request headers that repeat from socket to socket are shared tuples
      (~1-2 KiB with a browser's headers), the local address is one shared tuple, the
      client's host one interned string.

    Written against uvicorn 0.54 (pinned): `start_keepalive()` runs right after uvicorn
    wrote the handshake response; nothing reads the request or response after it.
    """

    __slots__ = (
        "client",
        "conn",
        "curr_msg_data_type",
        "frames",
        "last_ping_rtt",
        "pending_ping_payload",
        "ping_sent_at",
        "ping_timer",
        "pong_timer",
        "queue",
        "request",
        "response",
        "scheme",
        "scope",
        "server",
        "transport",
        "writable",
    )

    _extensions: list[ServerExtensionFactory] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()  # type: ignore[assignment]
        self.writable = _Flag()  # type: ignore[assignment]
        extensions = self.negotiable()
        if extensions:
            self.conn = ServerProtocol(
                extensions=extensions, max_size=self.config.ws_max_size, logger=self.conn.logger
            )

    @classmethod
    def negotiable(cls) -> list[ServerExtensionFactory]:
        """The extensions offered to clients, from the settings once per process."""
        if cls._extensions is None:
            cls._extensions = (
                [
                    ServerPerMessageDeflateFactory(
                        server_no_context_takeover=True,
                        client_no_context_takeover=True,
                        server_max_window_bits=12,
                        client_max_window_bits=12,
                        compress_settings={"memLevel": 5},
                    )
                ]
                if settings.WS_PER_MESSAGE_DEFLATE
                else []
            )
        return cls._extensions

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if self.server is not None and len(_local_addresses) < 16:
            self.server = _local_addresses.setdefault(self.server, self.server)
        if self.client is not None:
            self.client = (sys.intern(self.client[0]), self.client[1])

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        if not self.close_sent:  # accepted so far: uvicorn built the scope, the app waits
            headers = self.scope["headers"]
            if isinstance(headers, list):
                _share_headers(headers)

    def schedule_ping(self) -> None:
        assert self.ping_interval is not None
        delay = max(0.0, self.ping_interval - self.last_ping_rtt)
        # uvicorn only tests `ping_timer` for None, cancels it in stop_keepalive() (below)
        # and sets it to None when the ping fires (send_keepalive_ping).
        self.ping_timer = _Pings.of(self.loop).add(self, delay)  # type: ignore[assignment]

    def stop_keepalive(self) -> None:
        due = self.ping_timer
        if due is not None:
            due.pop(self, None)  # type: ignore[attr-defined]
            self.ping_timer = None
        super().stop_keepalive()

    def start_keepalive(self) -> None:
        # The socket is open. The request also stays referenced by websockets' parser
        # generator (a local of ServerProtocol.parse): empty its headers.
        if self.request is not None:
            self.request.headers.clear()
        self.request = self.response = None  # type: ignore[assignment]
        super().start_keepalive()


def uvicorn_options() -> dict[str, Any]:
    """uvicorn's options for a game replica (the gunicorn worker and `deploy.server`),
    from the settings."""
    return {
        "loop": "uvloop",
        "http": "httptools",
        "ws": GameWebSocketProtocol,
        # Negotiated by GameWebSocketProtocol itself (settings.WS_PER_MESSAGE_DEFLATE).
        "ws_per_message_deflate": False,
        "lifespan": "on",
        # Frames above the protocol's limit are closed with 1009 by the server itself.
        "ws_max_size": settings.MAX_FRAME_BYTES,
        # The server pings every socket; one that does not answer in time is closed.
        "ws_ping_interval": settings.WS_PING_INTERVAL_SECONDS,
        "ws_ping_timeout": settings.WS_PING_TIMEOUT_SECONDS,
        "proxy_headers": True,
        "forwarded_allow_ips": settings.FORWARDED_ALLOW_IPS,
        "timeout_graceful_shutdown": settings.GRACEFUL_SHUTDOWN_SECONDS,
    }


class GameUvicornWorker(UvicornWorker):  # type: ignore[misc]
    CONFIG_KWARGS: dict[str, Any] = uvicorn_options()

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = DrainingServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
