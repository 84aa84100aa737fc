"""ASGI entry point: HTTP through Django, WebSockets through Channels, lifespan for the replica."""

import contextlib
import os
from collections.abc import Awaitable
from importlib import import_module
from typing import Any, cast
from urllib.parse import ParseResult, urlparse

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
django_asgi_app = get_asgi_application()

from asgiref.sync import markcoroutinefunction  # noqa: E402
from channels.auth import UserLazyObject, get_user  # noqa: E402
from channels.routing import URLRouter  # noqa: E402
from channels.security.websocket import WebsocketDenier  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth.models import AnonymousUser  # noqa: E402
from django.http import parse_cookie  # noqa: E402
from django.urls.exceptions import Resolver404  # noqa: E402
from django.utils.functional import LazyObject  # noqa: E402

from config.origin import origin_validator  # noqa: E402
from realtime.lifespan import Lifespan  # noqa: E402
from realtime.routing import websocket_urlpatterns  # noqa: E402

Scope = dict[str, Any]


class _NewSession(LazyObject):
    """`scope["session"]` without a session cookie: an empty session of SESSION_ENGINE,
    made on first use (SessionMiddleware makes it at once; nothing to load either way)."""

    def _setup(self) -> None:
        self._wrapped = import_module(settings.SESSION_ENGINE).SessionStore(None)


class _Anonymous(UserLazyObject):  # type: ignore[misc]
    """`scope["user"]` without a session cookie: `AnonymousUser`, what `get_user` returns
    for an empty session, made on first use."""

    def _setup(self) -> None:
        self._wrapped = AnonymousUser()


class ProtocolRouter:
    """Channels' `ProtocolTypeRouter` without a coroutine frame of its own: `__call__`
    returns the protocol application's coroutine. A socket keeps the frames of everything
    that awaits it for its whole life (~0.4 KiB each)."""

    def __init__(self, applications: dict[str, Any]) -> None:
        self.applications = applications

    @markcoroutinefunction  # an ASGI 3 application for uvicorn's and asgiref's checks
    def __call__(self, scope: Scope, receive: Any, send: Any) -> Awaitable[None]:
        application = self.applications.get(scope["type"])
        if application is None:
            raise ValueError(f"No application configured for scope type {scope['type']!r}")
        return cast(Awaitable[None], application(scope, receive, send))


class SocketStack:
    """`origin_validator(AuthMiddlewareStack(URLRouter(routes)))` for WebSockets, flattened.

    The consumer gets the scope Channels' stack gives it: `cookies`, `session` (a
    `LazyObject` around the session store), `user` (a `UserLazyObject`),
    `path_remaining` and `url_route`, after the same browser Origin check. What differs
    is the cost of an open socket, which keeps its whole chain of middleware frames and
    their scope copies alive: this is no frame at all and no copy (the keys are added to
    the server's scope: nothing upstream reads them) instead of six frames and four
    copies, about 4.5 KiB less per socket (bench/sockets.py). Also:

    - no `send` wrapper: Channels' session wrapper saves sessions only on
      `http.response.start`, so on a socket it only costs time on every frame;
    - without a session cookie, `session` and `user` are made on first use: an empty
      session and `AnonymousUser`, what the middleware would resolve (`get_user` returns
      `AnonymousUser` for an empty session), without its hop to the database thread.
    """

    def __init__(self, routes: list[Any]) -> None:
        self.router = URLRouter(routes)
        self.origin = origin_validator(self.router)
        self.cookie_name = settings.SESSION_COOKIE_NAME
        self.session_store = import_module(settings.SESSION_ENGINE).SessionStore

    @markcoroutinefunction  # an ASGI 3 application
    def __call__(self, scope: Scope, receive: Any, send: Any) -> Awaitable[None]:
        """The consumer's own coroutine (no frame of ours lives as long as the socket), or,
        with a session cookie, one that resolves the user first."""
        if scope["type"] != "websocket":
            raise ValueError("SocketStack serves WebSocket connections only")
        if "headers" not in scope:
            raise ValueError("a WebSocket scope without headers")
        origin: ParseResult | None = None
        cookies: dict[str, str] | None = None
        for name, value in scope["headers"]:
            if name == b"origin":  # the last one counts, as in OriginValidator
                with contextlib.suppress(UnicodeDecodeError):
                    origin = urlparse(value.decode("latin1"))
            elif name == b"cookie" and cookies is None:  # the first, as in CookieMiddleware
                cookies = parse_cookie(value.decode("latin1"))
        if not self.origin.valid_origin(origin):
            return cast(Awaitable[None], WebsocketDenier()(scope, receive, send))
        cookies = cookies if cookies is not None else {}
        # SessionMiddleware, then AuthMiddleware (resolved before the consumer starts).
        session_key = cookies.get(self.cookie_name)
        scope["cookies"] = cookies
        if session_key is None:  # what the middleware would resolve, made on first use
            scope["session"], scope["user"] = _NewSession(), _Anonymous()
            return self.route(scope, receive, send)
        return self.with_user(scope, receive, send, session_key)

    async def with_user(self, scope: Scope, receive: Any, send: Any, session_key: str) -> None:
        session = scope["session"] = LazyObject()
        session._wrapped = self.session_store(session_key)
        user = scope["user"] = UserLazyObject()
        user._wrapped = await get_user(scope)
        await self.route(scope, receive, send)

    def route(self, scope: Scope, receive: Any, send: Any) -> Awaitable[None]:
        """URLRouter: the matching consumer's coroutine."""
        path = scope.get("path_remaining", scope.get("path"))
        if path is None:
            raise ValueError("No 'path' key in connection scope, cannot route URLs")
        if "path_remaining" not in scope:
            root_path = scope.get("root_path", "")
            if root_path and not path.startswith(root_path):
                raise ValueError(f"No route found for path {path!r}.")
            path = path[len(root_path) :]
        path = path.lstrip("/")
        for route in self.router.routes:
            try:
                match = route.pattern.match(path)
            except Resolver404:
                continue
            if match:
                new_path, args, kwargs = match
                kwargs.update(route.default_args)
                outer = scope.get("url_route", {})
                scope["path_remaining"] = new_path
                scope["url_route"] = {
                    "args": outer.get("args", ()) + args,
                    "kwargs": {**outer.get("kwargs", {}), **kwargs},
                }
                app = route.callback
                consumer_class = getattr(app, "consumer_class", None)
                if consumer_class is not None:  # as_asgi(): skip its frame as well
                    app = consumer_class(**app.consumer_initkwargs)
                return cast(Awaitable[None], app(scope, receive, send))
        raise ValueError(f"No route found for path {path!r}.")


application = ProtocolRouter(
    {
        "http": django_asgi_app,
        "websocket": SocketStack(websocket_urlpatterns),
        "lifespan": Lifespan(),
    }
)
