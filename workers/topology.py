"""Exchanges and queues of the job fleet, declared by publishers and workers alike.

publish ──▶ exchange tictac.jobs.v2 (direct, key = kind) ──▶ queue tictac.jobs.v2
delayed publish ──▶ queue tictac.jobs.v2.delay.<n>s (TTL n s) ──dead-letter──▶ tictac.jobs.v2
failure ──▶ queue tictac.jobs.v2.retry.<n>s (TTL n s) ──dead-letter──▶ tictac.jobs.v2
last failure, or more than `delivery_limit` deliveries without an ack (a job that kills
its worker) ──▶ queue tictac.jobs.v2.dead (inspected and replayed: `manage.py dead_letters`)

Every queue is a quorum queue (replicated, durable, non-exclusive). The delay, retry and
jobs queues dead-letter `at-least-once` (RabbitMQ keeps the message until the target queue
confirmed it; that strategy needs `x-overflow: reject-publish`, which only acts on a
length limit, and none is set), so a job in a delay or retry queue, or one past its
delivery limit, is not dropped when the target is briefly unavailable.

The `.v2` names: RabbitMQ cannot turn the classic queues of earlier versions
(`tictac.jobs`, `tictac.jobs.retry.<n>s`, `tictac.jobs.dead`) into quorum queues under
the same name (a redeclare with another type fails with PRECONDITION_FAILED), so the
quorum topology lives next to them, with an exchange of its own (the old exchange keeps
feeding the old queue while old replicas still publish). `manage.py dead_letters
move-legacy` moves what is left in the classic queues, once; `declare` logs a warning
while any of them still holds messages.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from aio_pika.exceptions import ChannelClosed

log = logging.getLogger(__name__)

JOBS_EXCHANGE = "tictac.jobs.v2"
JOBS_QUEUE = "tictac.jobs.v2"
DEAD_QUEUE = "tictac.jobs.v2.dead"
DEFAULT_DELIVERY_LIMIT = 5

# The classic topology of earlier versions (moved by `dead_letters move-legacy`).
LEGACY_EXCHANGE = "tictac.jobs"
LEGACY_JOBS_QUEUE = "tictac.jobs"
LEGACY_DEAD_QUEUE = "tictac.jobs.dead"


def retry_queue(delay: float) -> str:
    return f"{JOBS_QUEUE}.retry.{delay:g}s"


def delay_queue(delay: float) -> str:
    return f"{JOBS_QUEUE}.delay.{delay:g}s"


def legacy_retry_queue(delay: float) -> str:
    return f"{LEGACY_JOBS_QUEUE}.retry.{delay:g}s"


class TopologyMismatch(RuntimeError):
    """A job queue exists with other arguments than this version declares."""


async def server_major(channel: AbstractChannel) -> int:
    """The broker's major version (3 for 3.x); 0 when it does not say."""
    underlay = await channel.get_underlay_channel()
    version = str((underlay.connection.server_properties or {}).get("version", "0"))
    try:
        return int(version.split(".", 1)[0])
    except ValueError:
        return 0


def _at_least_once(exchange: str, routing_key: str | None = None) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "x-dead-letter-exchange": exchange,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    if routing_key is not None:
        arguments["x-dead-letter-routing-key"] = routing_key
    return arguments


def jobs_arguments(delivery_limit: int) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        **_at_least_once("", DEAD_QUEUE),
    }


def holding_arguments(delay: float) -> dict[str, Any]:
    """A delay or retry queue: nobody consumes it; after `delay` its messages go to the
    jobs exchange under the routing key they came with (the queue's name)."""
    return {
        "x-queue-type": "quorum",
        "x-message-ttl": int(delay * 1000),
        **_at_least_once(JOBS_EXCHANGE),
    }


def dead_arguments(major: int) -> dict[str, Any]:
    # RabbitMQ 4 gives quorum queues a default delivery limit of 20 and drops a message
    # past it when the queue has no dead-letter exchange: the dead queue is read (and
    # returned) by `dead_letters list`, so it gets no limit (-1). On 3.x there is no
    # default, and -1 there means "drop on the first return": leave it out.
    arguments: dict[str, Any] = {"x-queue-type": "quorum"}
    if major >= 4:
        arguments["x-delivery-limit"] = -1
    return arguments


async def _declare_queue(
    channel: AbstractChannel, name: str, arguments: dict[str, Any]
) -> AbstractQueue:
    try:
        return await channel.declare_queue(name, durable=True, arguments=arguments)
    except ChannelClosed as exc:
        if "PRECONDITION_FAILED" not in str(exc):
            raise
        raise TopologyMismatch(
            f"queue {name!r} exists with other arguments than this version declares ({exc}); "
            f"it wants {arguments}. A queue's type and arguments cannot change in place: "
            "drain it (stop its publishers, let the workers empty it or move it with "
            "`manage.py dead_letters move-legacy --from-queue ...`), delete it, and start "
            "again; see README, 'Worker fleet'."
        ) from exc


async def declare(
    channel: AbstractChannel,
    *,
    kinds: Iterable[str],
    retry_delays: Iterable[float],
    delays: Iterable[float] = (),
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
) -> tuple[AbstractExchange, AbstractQueue]:
    """Declare the whole topology on `channel` (a failed declare closes the channel:
    use one of its own). Raises TopologyMismatch for a queue of other arguments."""
    major = await server_major(channel)
    exchange = await channel.declare_exchange(
        JOBS_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
    )
    await _declare_queue(channel, DEAD_QUEUE, dead_arguments(major))
    queue = await _declare_queue(channel, JOBS_QUEUE, jobs_arguments(delivery_limit))
    for kind in kinds:
        await queue.bind(exchange, routing_key=kind)
    for name, delay in [(retry_queue(d), d) for d in retry_delays] + [
        (delay_queue(d), d) for d in delays if d > 0
    ]:
        # A held message is published to its queue by name (default exchange); when its
        # TTL runs out it is dead-lettered to the jobs exchange under that same routing
        # key, which the jobs queue binds.
        await _declare_queue(channel, name, holding_arguments(delay))
        await queue.bind(exchange, routing_key=name)
    return exchange, queue


async def declare_delay(channel: AbstractChannel, delay: float) -> str:
    """One more delay queue (a publisher's first job with that delay); its name."""
    exchange = await channel.get_exchange(JOBS_EXCHANGE, ensure=False)
    name = delay_queue(delay)
    await _declare_queue(channel, name, holding_arguments(delay))
    queue = await channel.get_queue(JOBS_QUEUE, ensure=False)
    await queue.bind(exchange, routing_key=name)
    return name


async def legacy_backlog(connection: aio_pika.abc.AbstractConnection) -> dict[str, int]:
    """Messages left in the classic queues of earlier versions, by queue (those that
    exist; a passive declare of a missing queue closes its channel, so one each)."""
    found: dict[str, int] = {}
    for name in (LEGACY_JOBS_QUEUE, LEGACY_DEAD_QUEUE):
        channel = await connection.channel()
        try:
            declared = await channel.declare_queue(name, passive=True)
        except ChannelClosed:
            continue
        found[name] = int(declared.declaration_result.message_count or 0)
        await channel.close()
    return found


async def warn_legacy(connection: aio_pika.abc.AbstractConnection) -> None:
    """Log a warning while the classic queues of earlier versions hold messages."""
    try:
        backlog = await legacy_backlog(connection)
    except Exception:  # a check only: never in the way of starting
        log.debug("could not check the legacy job queues", exc_info=True)
        return
    waiting = {name: n for name, n in backlog.items() if n}
    if waiting:
        log.warning(
            "the classic job queues of an earlier version still hold messages %s: once no "
            "old worker or replica runs, move them with `manage.py dead_letters move-legacy`",
            waiting,
        )
