"""The worker runtime: consume jobs with manual acknowledgement, retry, dead-letter.

- A job is acknowledged only after its handler returned, i.e. after the
  handler's database commit; a worker that dies mid-job leaves it unacked and
  RabbitMQ hands it to another worker. Handlers are idempotent by the job's key.
- At most `concurrency` jobs are in hand at once (the channel's prefetch), each in a
  task of its own. No handler waits on purpose: a job due later (the computer's think
  time) waits in a delay queue of the broker (workers/publisher.py), not in a slot.
- A failing job is re-published to a delay queue (`retry_delays`, one per
  attempt) and comes back after the delay; after the last attempt, or at once
  for a message that cannot be decoded or names no known kind, it goes to the
  dead-letter queue with the error in its headers. Either way the original is
  acknowledged, so a poison message never blocks the queue.
- A job that kills its worker (no exception to catch: a crash, an OOM kill) comes back
  unacknowledged; the quorum queue counts its deliveries and dead-letters it after
  `delivery_limit` redeliveries (`x-first-death-reason: delivery_limit`).
- `tictac_jobs_queue_depth{queue}`: the broker's count of ready messages in the jobs and
  the dead-letter queue, read every `depth_seconds` (a passive declare, no plugin).
- Started while the broker is away, a worker waits for it (backoff up to 10 s).
- SIGTERM: stop taking jobs, finish the ones in hand (up to `grace` seconds),
  then close; anything still unacked is redelivered elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from prometheus_client import Counter, Gauge, Histogram

from . import topology

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[None]]

JOBS = Counter("tictac_jobs_total", "Jobs handled, by kind and outcome", ["kind", "outcome"])
JOB_SECONDS = Histogram(
    "tictac_job_seconds",
    "Job handling time",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
QUEUE_DEPTH = Gauge(
    "tictac_jobs_queue_depth", "Messages ready in a job queue, as the broker counts them", ["queue"]
)
IN_HAND = Gauge("tictac_jobs_in_hand", "Jobs this worker is handling now")


# Errors that mean "the broker is not there (yet)" at connection time.
BROKER_DOWN = (aio_pika.exceptions.AMQPConnectionError, ConnectionError, OSError)


class PoisonMessage(Exception):
    """A message no retry can help: undecodable, or of an unknown kind."""


class Worker:
    def __init__(
        self,
        url: str,
        handlers: Mapping[str, Handler],
        *,
        concurrency: int = 4,
        retry_delays: tuple[float, ...] = (1.0, 5.0, 25.0),
        grace: float = 25.0,
        periodic: Callable[[], Awaitable[None]] | None = None,
        periodic_seconds: float = 5.0,
        delivery_limit: int = topology.DEFAULT_DELIVERY_LIMIT,
        depth_seconds: float = 5.0,
    ) -> None:
        self.url = url
        self.handlers = dict(handlers)
        self.concurrency = concurrency
        self.retry_delays = retry_delays
        self.grace = grace
        self.periodic = periodic
        self.periodic_seconds = periodic_seconds
        self.delivery_limit = delivery_limit
        self.depth_seconds = depth_seconds
        self.channel: AbstractChannel | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        connection = await self._connect(stop)
        if connection is None:  # stopped before the broker ever answered
            log.info("worker stopped before it could connect")
            return
        try:
            # The declarations on a channel of their own: a refused one closes its channel.
            declaring = await connection.channel()
            try:
                await topology.declare(
                    declaring,
                    kinds=self.handlers,
                    retry_delays=self.retry_delays,
                    delivery_limit=self.delivery_limit,
                )
            except topology.TopologyMismatch as exc:
                log.error("worker cannot start: %s", exc)
                raise
            await declaring.close()
            await topology.warn_legacy(connection)
            channel = self.channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=self.concurrency)
            # Declared (same arguments) on the consuming channel too: the robust channel
            # restores the queues it declared, and their consumers, after a reconnect.
            queue = await channel.declare_queue(
                topology.JOBS_QUEUE,
                durable=True,
                arguments=topology.jobs_arguments(self.delivery_limit),
            )
            tag = await queue.consume(self._on_message)
            log.info("worker consuming %s (concurrency %d)", topology.JOBS_QUEUE, self.concurrency)
            chores = [
                asyncio.create_task(self._chores(stop)),
                asyncio.create_task(self._depths(connection, stop)),
            ]
            await stop.wait()
            log.info("worker stopping: no new jobs; finishing %d in hand", len(self._tasks))
            await queue.cancel(tag)
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=self.grace)
            for chore in chores:
                chore.cancel()
            await asyncio.gather(*chores, return_exceptions=True)
        finally:
            await connection.close()
        log.info("worker stopped")

    async def _connect(self, stop: asyncio.Event) -> AbstractRobustConnection | None:
        """Connect, waiting for the broker if it is not there yet (a worker may start
        before RabbitMQ does, or during its restart); None if stopped meanwhile.
        Once connected, aio-pika's robust connection handles later outages."""
        delay = 0.5
        while not stop.is_set():
            try:
                return await aio_pika.connect_robust(self.url)
            except BROKER_DOWN as exc:
                log.warning("worker: broker unreachable (%s); retrying in %.1fs", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 10.0)
        return None

    async def _chores(self, stop: asyncio.Event) -> None:
        """The handlers' periodic sweep."""
        while not stop.is_set() and self.periodic is not None:
            try:
                await self.periodic()
            except Exception:
                log.exception("worker chores failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.periodic_seconds)

    async def _depths(self, connection: AbstractRobustConnection, stop: asyncio.Event) -> None:
        """The queue depth gauge, from the broker every `depth_seconds`.

        On a fresh channel each time: a passive declare on the robust channel that declared
        the queue is answered from aio-pika's cache (RobustChannel.declare_queue returns
        the queue it declared, with the declaration result of that time), which is why
        the gauge used to keep its start-up value (0); and a failed passive declare closes
        its channel, which must not be the one the jobs are consumed on. In a loop of its
        own, so a slow sweep does not hold it up."""
        while not stop.is_set():
            try:
                for name, depth in (await queue_depths(connection)).items():
                    QUEUE_DEPTH.labels(name).set(depth)
            except Exception:
                log.warning("worker: could not read the queue depths; retrying", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.depth_seconds)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        IN_HAND.inc()
        try:
            await self._handle(message)
        finally:
            IN_HAND.dec()
            self._tasks.discard(task)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        kind = message.type or "unknown"
        started = time.perf_counter()
        deliveries = (message.headers or {}).get("x-delivery-count")
        if isinstance(deliveries, int) and deliveries > 0:
            log.warning(
                "job %s %s delivered again (%d earlier deliveries unacknowledged; dead at %d)",
                kind,
                message.message_id,
                deliveries,
                self.delivery_limit + 1,
            )
        try:
            handler = self.handlers.get(kind)
            if handler is None:
                raise PoisonMessage(f"no handler for kind {kind!r}")
            try:
                payload = json.loads(message.body)
            except ValueError as exc:
                raise PoisonMessage(f"undecodable body: {exc}") from exc
            if not isinstance(payload, dict):
                raise PoisonMessage("payload is not an object")
            await handler(payload)
        except Exception as exc:
            await self._failed(message, kind, exc)
            return
        finally:
            JOB_SECONDS.labels(kind).observe(time.perf_counter() - started)
        await message.ack()
        JOBS.labels(kind, "ok").inc()

    async def _failed(self, message: AbstractIncomingMessage, kind: str, exc: Exception) -> None:
        raw_attempt = (message.headers or {}).get("x-attempt", 0)
        attempt = raw_attempt if isinstance(raw_attempt, int) else 0
        poison = isinstance(exc, PoisonMessage)
        if poison or attempt >= len(self.retry_delays):
            log.error(
                "job %s %s dead after %d attempts: %r", kind, message.message_id, attempt + 1, exc
            )
            await self._republish(message, topology.DEAD_QUEUE, attempt + 1, exc)
            JOBS.labels(kind, "dead").inc()
        else:
            delay = self.retry_delays[attempt]
            log.warning("job %s %s failed (%r); retry in %gs", kind, message.message_id, exc, delay)
            await self._republish(message, topology.retry_queue(delay), attempt + 1, exc)
            JOBS.labels(kind, "retried").inc()
        await message.ack()

    async def _republish(
        self, message: AbstractIncomingMessage, queue: str, attempt: int, exc: Exception
    ) -> None:
        assert self.channel is not None
        copy = aio_pika.Message(
            message.body,
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message.message_id,
            type=message.type,
            headers={
                **{k: v for k, v in (message.headers or {}).items() if k != "x-delivery-count"},
                "x-attempt": attempt,
                "x-error": repr(exc)[:500],
            },
        )
        await self.channel.default_exchange.publish(copy, routing_key=queue)


async def queue_depths(
    connection: aio_pika.abc.AbstractConnection,
    names: tuple[str, ...] = (topology.JOBS_QUEUE, topology.DEAD_QUEUE),
) -> dict[str, int]:
    """Ready messages per queue, as the broker counts them (a passive declare each, on a
    channel opened for it); a missing queue is left out."""
    depths: dict[str, int] = {}
    for name in names:
        channel = await connection.channel()
        try:
            declared = await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelClosed:  # 404: closed the channel
            continue
        depths[name] = int(declared.declaration_result.message_count or 0)
        await channel.close()
    return depths
