"""Fixtures of the socket-side suites."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings as django_settings
from django.db import connections

from config.asgi import application
from game import jobs
from game.play import close_store
from realtime import groups
from tests.support.ws import Sockets
from workers.runtime import Worker


@pytest.fixture
async def ws(transactional_db: None) -> AsyncIterator[Sockets]:
    """Opens connections to the real application; every one is closed afterwards.

    With RABBITMQ_URL set (`make test-rabbitmq`) jobs go to the broker, so a real
    worker (workers.runtime.Worker with the game's handlers) consumes them here.
    """
    sockets = Sockets(application)
    stop = asyncio.Event()
    worker = None
    if django_settings.RABBITMQ_URL:
        runner = Worker(django_settings.RABBITMQ_URL, jobs.HANDLERS, retry_delays=(0.2,))
        worker = asyncio.create_task(runner.run(stop))
    try:
        yield sockets
    finally:
        # a computer move still thinking, a presence broadcast: none outlives the test
        pending = [*jobs._local, *groups.presence_pending()]
        if pending:
            await asyncio.wait(pending, timeout=5)
        await sockets.close_all()
        await close_store()  # the PostgreSQL pool of this test's event loop
        if worker is not None:
            stop.set()
            await worker
            await jobs.publisher().close()
        layer = get_channel_layer()
        if hasattr(layer, "close"):  # the RabbitMQ layer (RABBITMQ_URL set): its connection
            await layer.close()
        # The consumer's database thread keeps its connection (channels' test
        # communicator turns close_old_connections off); close it there, or
        # PostgreSQL cannot drop the test database at the end of the session.
        await sync_to_async(connections.close_all)()


@pytest.fixture
def roomy_limits(settings: Any) -> None:
    """Rate limits far above what a test sends (for tests that send many frames in a row)."""
    settings.RATE_LIMIT_PER_SECOND = 10_000
    settings.RATE_LIMIT_CLOSE_PER_SECOND = 20_000
