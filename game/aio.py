"""The async code's only doors to the ORM."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from channels.db import database_sync_to_async

from .protocol import StateMessage
from .selectors import room_state

T = TypeVar("T")


def _then_read(
    service: Callable[..., T], code: str, kwargs: dict[str, Any]
) -> tuple[T, StateMessage | None]:
    result = service(code=code, **kwargs)
    return result, room_state(code)


async def call(service: Callable[..., T], /, **kwargs: Any) -> T:
    """Run one service in the database thread."""
    return cast(T, await database_sync_to_async(service)(**kwargs))


async def call_then_read(
    service: Callable[..., T], *, code: str, **kwargs: Any
) -> tuple[T, StateMessage | None]:
    """Run a service on a room and read the room's new state in the same thread hop."""
    return await call(_then_read, service=service, code=code, kwargs=kwargs)


async def read_state(code: str) -> StateMessage | None:
    return await call(room_state, code=code)
