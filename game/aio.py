"""The async code's door to the ORM for everything off the hot path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from channels.db import database_sync_to_async

T = TypeVar("T")


async def call(service: Callable[..., T], /, **kwargs: Any) -> T:
    """Run one ORM service in Django's database thread."""
    return cast(T, await database_sync_to_async(service)(**kwargs))
