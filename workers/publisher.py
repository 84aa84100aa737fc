"""Confirmed, persistent job publishing from any process (web replicas, workers).

A job with a `delay` (the computer's think time) goes to a delay queue whose TTL
dead-letters it into the jobs exchange: the wait is the broker's, no worker holds it.
"""

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
        delays: tuple[float, ...] = (),
        delivery_limit: int = topology.DEFAULT_DELIVERY_LIMIT,
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.kinds = kinds
        self.retry_delays = retry_delays
        self.delays = delays
        self.delivery_limit = delivery_limit
        self.timeout = timeout
        self._ready: dict[asyncio.AbstractEventLoop, asyncio.Task[AbstractExchange]] = {}
        self._connections: dict[asyncio.AbstractEventLoop, AbstractRobustConnection] = {}
        self._channels: dict[asyncio.AbstractEventLoop, AbstractChannel] = {}
        self._delay_queues: dict[asyncio.AbstractEventLoop, dict[float, asyncio.Task[str]]] = {}
        self.channel: AbstractChannel | None = None

    async def _open(self, loop: asyncio.AbstractEventLoop) -> AbstractExchange:
        connection = await aio_pika.connect_robust(self.url)
        self._connections[loop] = connection
        # The declarations on a channel of their own: a refused one closes its channel.
        declaring = await connection.channel()
        await topology.declare(
            declaring,
            kinds=self.kinds,
            retry_delays=self.retry_delays,
            delays=self.delays,
            delivery_limit=self.delivery_limit,
        )
        await declaring.close()
        await topology.warn_legacy(connection)
        channel = await connection.channel(publisher_confirms=True)
        self.channel = self._channels[loop] = channel
        return await channel.get_exchange(topology.JOBS_EXCHANGE, ensure=False)

    async def _delay_queue(self, delay: float) -> str:
        """The delay queue for `delay`, declared once per event loop."""
        loop = asyncio.get_running_loop()
        known = self._delay_queues.setdefault(loop, {})
        task = known.get(delay)
        if task is None or (task.done() and task.exception() is not None):
            connection = self._connections[loop]

            async def declare() -> str:
                channel = await connection.channel()
                try:
                    return await topology.declare_delay(channel, delay)
                finally:
                    if not channel.is_closed:
                        await channel.close()

            task = known[delay] = loop.create_task(declare(), context=contextvars.Context())
        return await asyncio.shield(task)

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

    async def publish(
        self, kind: str, payload: dict[str, Any], *, key: str, delay: float = 0.0
    ) -> None:
        """Publish a job; `key` is its idempotency key (AMQP message_id). With `delay`
        (seconds) it reaches the workers that much later (a delay queue's TTL)."""
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
            if delay > 0:
                name = await self._delay_queue(delay)
                channel = self._channels[asyncio.get_running_loop()]
                await channel.default_exchange.publish(
                    message, routing_key=name, timeout=self.timeout
                )
            else:
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
        self._delay_queues.pop(asyncio.get_running_loop(), None)
        self._channels.pop(asyncio.get_running_loop(), None)
        if connection is not None:
            await connection.close()
