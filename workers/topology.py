"""Exchanges and queues of the job fleet, declared by publishers and workers alike.

publish ──▶ exchange tictac.jobs (direct, key = kind) ──▶ queue tictac.jobs (durable)
failure ──▶ queue tictac.jobs.retry.<n>s (TTL n s) ──dead-letter──▶ tictac.jobs
last failure ──▶ queue tictac.jobs.dead (durable, inspected by humans)
"""

from __future__ import annotations

from collections.abc import Iterable

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

JOBS_EXCHANGE = "tictac.jobs"
JOBS_QUEUE = "tictac.jobs"
DEAD_QUEUE = "tictac.jobs.dead"


def retry_queue(delay: float) -> str:
    return f"tictac.jobs.retry.{delay:g}s"


async def declare(
    channel: AbstractChannel, *, kinds: Iterable[str], retry_delays: Iterable[float]
) -> tuple[AbstractExchange, AbstractQueue]:
    exchange = await channel.declare_exchange(
        JOBS_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
    )
    queue = await channel.declare_queue(JOBS_QUEUE, durable=True)
    for kind in kinds:
        await queue.bind(exchange, routing_key=kind)
    for delay in retry_delays:
        name = retry_queue(delay)
        # A retried message is published to the retry queue by name (default
        # exchange); when its TTL runs out it is dead-lettered to the jobs
        # exchange under that same routing key, which the jobs queue binds.
        await channel.declare_queue(
            name,
            durable=True,
            arguments={
                "x-message-ttl": int(delay * 1000),
                "x-dead-letter-exchange": JOBS_EXCHANGE,
            },
        )
        await queue.bind(exchange, routing_key=name)
    await channel.declare_queue(DEAD_QUEUE, durable=True)
    return exchange, queue
