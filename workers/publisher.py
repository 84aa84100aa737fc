"""Confirmed, persistent job publishing from any process (web replicas, workers)."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from prometheus_client import Counter

from . import topology

log = logging.getLogger(__name__)

PUBLISHED = Counter("tictac_jobs_published_total", "Jobs published", ["kind", "outcome"])


class JobPublisher:
    """One robust connection per event loop; every publish waits for the broker's confirm."""

    def __init__(
        self,
        url: str,
        *,
        kinds: tuple[str, ...],
        retry_delays: tuple[float, ...],
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.kinds = kinds
        self.retry_delays = retry_delays
        self.timeout = timeout
        self._ready: dict[asyncio.AbstractEventLoop, asyncio.Task[AbstractExchange]] = {}
        self._connections: dict[asyncio.AbstractEventLoop, AbstractRobustConnection] = {}
        self.channel: AbstractChannel | None = None

    async def _open(self, loop: asyncio.AbstractEventLoop) -> AbstractExchange:
        connection = await aio_pika.connect_robust(self.url)
        self._connections[loop] = connection
        channel = await connection.channel(publisher_confirms=True)
        exchange, _ = await topology.declare(
            channel, kinds=self.kinds, retry_delays=self.retry_delays
        )
        self.channel = channel
        return exchange

    async def exchange(self) -> AbstractExchange:
        loop = asyncio.get_running_loop()
        task = self._ready.get(loop)
        if task is None or (task.done() and task.exception() is not None):
            # The connection outlives the request that first publishes: keep it
            # out of that request's context (see layer.node.Node._own_task).
            task = self._ready[loop] = loop.create_task(
                self._open(loop), context=contextvars.Context()
            )
        return await asyncio.shield(task)

    async def publish(self, kind: str, payload: dict[str, Any], *, key: str) -> None:
        """Publish a job; `key` is its idempotency key (AMQP message_id)."""
        message = aio_pika.Message(
            json.dumps(payload).encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=key,
            type=kind,
            headers={"x-attempt": 0},
        )

        async def send() -> None:
            exchange = await self.exchange()
            await exchange.publish(message, routing_key=kind, timeout=self.timeout)

        try:
            await asyncio.wait_for(asyncio.shield(asyncio.ensure_future(send())), self.timeout)
        except Exception:
            PUBLISHED.labels(kind, "failed").inc()
            raise
        PUBLISHED.labels(kind, "ok").inc()

    async def close(self) -> None:
        connection = self._connections.pop(asyncio.get_running_loop(), None)
        self._ready.pop(asyncio.get_running_loop(), None)
        if connection is not None:
            await connection.close()
