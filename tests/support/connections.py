"""Real WebSocket clients (`gameclient.connection.Connection`) for tests against real
replicas, each waiting a scaled budget (TEST_TIME_SCALE) when a test names no limit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from gameclient.connection import DEFAULT_TIMEOUT, Connection
from tests.support.timing import budget

OpenClient = Callable[[str, str], Awaitable[Connection]]


@asynccontextmanager
async def opened_clients() -> AsyncIterator[OpenClient]:
    """open(url, label) -> Connection; every client opened is closed on the way out."""
    async with AsyncExitStack() as stack:

        async def open_client(url: str, label: str) -> Connection:
            client = await Connection.open(url, label, wait=budget(DEFAULT_TIMEOUT))
            stack.push_async_callback(client.close)
            return client

        yield open_client
