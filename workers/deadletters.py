"""The dead-letter queue read and replayed, and the classic queues of earlier versions moved.

Moving a message between two queues (replay: dead queue -> jobs exchange; move-legacy:
classic queue -> quorum topology) is done one message at a time: take it unacknowledged
(basic.get), publish the copy with a publisher confirm, acknowledge the original only
after the confirm. So a message is never lost: until its ack the original is the
broker's (a crash or a closed connection gives it back to its queue).

What "exactly once" means here:
- within one run each message is taken once: the run takes at most as many messages as
  the queue held when it started (the queue is FIFO: a replayed job that dies again goes
  to the tail, behind them), and the messages it skips stay unacknowledged in its hands
  until it ends, so `basic.get` never hands them out twice;
- SIGINT/SIGTERM (Ctrl-C, a pod's stop) end the run between two messages: the message in
  hand is published, confirmed and acknowledged first, so an interrupted run leaves no
  copy behind;
- only a hard stop (SIGKILL, the connection lost) in the window between the broker's
  confirm and the ack reaching it (one round trip) leaves the original in the dead queue
  as well as the copy in the jobs queue. The copy keeps the job's key (message_id) and
  every handler is idempotent by that key (game/jobs.py), so even then the job's effect
  happens once; the copy carries `x-replayed` (how many times it was replayed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aiormq.exceptions import PublishError

from . import topology

# Headers of a failure that a replayed or moved copy does not carry on.
FAILURE_HEADERS = ("x-attempt", "x-error", "x-delivery-count", "x-death")


@dataclass(frozen=True)
class Letter:
    """One dead-lettered job as `dead_letters list` shows it."""

    kind: str
    key: str
    reason: str  # the worker's x-error, or the broker's first death reason
    attempts: int  # deliveries that failed before it died, as far as the headers say
    replayed: int
    headers: dict[str, Any]


@dataclass
class Moved:
    moved: int = 0
    kept: int = 0
    unroutable: list[str] = field(default_factory=list)


def describe(message: AbstractIncomingMessage) -> Letter:
    headers = dict(message.headers or {})
    reason = str(headers.get("x-error") or "")
    attempts = headers.get("x-attempt")
    if not reason:
        first = str(headers.get("x-first-death-reason") or "unknown")
        queue = str(headers.get("x-first-death-queue") or "")
        reason = f"{first} (broker, queue {queue})" if queue else first
    if not isinstance(attempts, int):
        attempts = 0  # the broker dead-lettered it (delivery limit): the worker never did
    replayed = headers.get("x-replayed")
    return Letter(
        kind=str(message.type or "unknown"),
        key=str(message.message_id or ""),
        reason=reason,
        attempts=attempts,
        replayed=replayed if isinstance(replayed, int) else 0,
        headers={k: _plain(v) for k, v in headers.items()},
    )


def _plain(value: Any) -> Any:
    """Header values as JSON can show them (x-death holds tables and datetimes)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _copy(message: AbstractIncomingMessage, **headers: Any) -> aio_pika.Message:
    kept = {k: v for k, v in (message.headers or {}).items() if k not in FAILURE_HEADERS}
    kept = {k: v for k, v in kept.items() if not k.startswith("x-first-death")}
    return aio_pika.Message(
        message.body,
        content_type=message.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        type=message.type,
        headers={**kept, "x-attempt": 0, **headers},
    )


async def _taking(
    channel: AbstractChannel, queue_name: str
) -> tuple[int, Callable[[], Any]] | None:
    """(messages in the queue now, a function taking the next one unacked); None when
    the queue does not exist (the channel is closed then)."""
    try:
        queue = await channel.declare_queue(queue_name, passive=True)
    except aio_pika.exceptions.ChannelClosed:
        return None
    count = int(queue.declaration_result.message_count or 0)
    return count, lambda: queue.get(no_ack=False, fail=False, timeout=10)


async def letters(url: str, *, limit: int | None = None) -> tuple[int, list[Letter]]:
    """(messages in the dead queue, up to `limit` of them described). Reading takes the
    messages unacknowledged and gives them all back (the channel closes): nothing is
    removed. The dead queue has no delivery limit (workers/topology.py), so reading it
    any number of times drops nothing."""
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel()
        taking = await _taking(channel, topology.DEAD_QUEUE)
        if taking is None:
            return 0, []
        count, take = taking
        found: list[Letter] = []
        for _ in range(count if limit is None else min(count, limit)):
            message = await take()
            if message is None:
                break
            found.append(describe(message))
        await channel.close()  # every message taken goes back
        return count, found


async def _move(
    connection: aio_pika.abc.AbstractConnection,
    source: str,
    route: Callable[[AbstractIncomingMessage], tuple[str, str]],
    *,
    select: Callable[[AbstractIncomingMessage], bool],
    stamp: Callable[[AbstractIncomingMessage], dict[str, Any]],
    stop: asyncio.Event,
    on_move: Callable[[AbstractIncomingMessage, str], None] | None = None,
) -> Moved | None:
    """Move the selected messages of `source` (those there when it starts), each: publish
    with a confirm to route(message) = (exchange, routing key), then ack. An unroutable
    message (mandatory publish returned) stays where it was. None: no such queue."""
    reading = await connection.channel()
    publishing = await connection.channel(publisher_confirms=True)
    taking = await _taking(reading, source)
    if taking is None:
        await publishing.close()
        return None
    count, take = taking
    result = Moved()
    exchanges: dict[str, aio_pika.abc.AbstractExchange] = {"": publishing.default_exchange}
    for _ in range(count):
        if stop.is_set():
            break
        message = await take()
        if message is None:
            break
        if not select(message):
            result.kept += 1  # held unacked until the end: not taken twice
            continue
        exchange_name, routing_key = route(message)
        if exchange_name not in exchanges:
            exchanges[exchange_name] = await publishing.get_exchange(exchange_name, ensure=False)
        try:
            await exchanges[exchange_name].publish(
                _copy(message, **stamp(message)), routing_key=routing_key, mandatory=True
            )
        except PublishError:  # returned: no queue binds that key (an unknown kind)
            result.unroutable.append(f"{message.type} {message.message_id}")
            result.kept += 1
            continue
        await message.ack()  # only now: the broker confirmed the copy
        result.moved += 1
        if on_move is not None:
            on_move(message, routing_key)
    await reading.close()  # what was kept goes back to the queue
    await publishing.close()
    return result


async def replay(
    url: str,
    *,
    keys: Collection[str] = (),
    stop: asyncio.Event | None = None,
    on_move: Callable[[AbstractIncomingMessage, str], None] | None = None,
) -> Moved:
    """Put dead-lettered jobs (all, or those whose key is in `keys`) back on the jobs
    exchange under their kind, with a fresh attempt count."""
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        moved = await _move(
            connection,
            topology.DEAD_QUEUE,
            lambda m: (topology.JOBS_EXCHANGE, str(m.type or "")),
            select=lambda m: not keys or str(m.message_id) in keys,
            stamp=lambda m: {"x-replayed": describe(m).replayed + 1},
            stop=stop or asyncio.Event(),
            on_move=on_move,
        )
    return moved or Moved()


async def move_legacy(
    url: str,
    *,
    retry_delays: Iterable[float],
    stop: asyncio.Event | None = None,
    on_move: Callable[[AbstractIncomingMessage, str], None] | None = None,
) -> dict[str, Moved]:
    """Move what the classic queues of an earlier version hold into the quorum topology:
    jobs and waiting retries onto the jobs exchange (under their kind), dead letters into
    the dead queue. Run it once no old worker or replica is left (the old retry queues
    would otherwise keep feeding the old jobs queue); a run moves what is there when it
    starts and may be repeated. The quorum topology must exist (a worker started once)."""
    stop = stop or asyncio.Event()
    connection = await aio_pika.connect(url, timeout=10)
    moved: dict[str, Moved] = {}
    async with connection:
        sources = [
            topology.LEGACY_JOBS_QUEUE,
            *(topology.legacy_retry_queue(d) for d in retry_delays),
        ]
        for source in sources:
            result = await _move(
                connection,
                source,
                lambda m: (topology.JOBS_EXCHANGE, str(m.type or "")),
                select=lambda m: True,
                stamp=lambda m, source=source: {"x-moved-from": source},  # type: ignore[misc]
                stop=stop,
                on_move=on_move,
            )
            if result is not None:
                moved[source] = result
        result = await _move(
            connection,
            topology.LEGACY_DEAD_QUEUE,
            lambda m: ("", topology.DEAD_QUEUE),
            select=lambda m: True,
            stamp=lambda m: (
                {
                    k: v
                    for k, v in (m.headers or {}).items()
                    if k in ("x-attempt", "x-error") or k.startswith("x-first-death")
                }
                | {"x-moved-from": topology.LEGACY_DEAD_QUEUE}
            ),
            stop=stop,
            on_move=on_move,
        )
        if result is not None:
            moved[topology.LEGACY_DEAD_QUEUE] = result
    return moved
