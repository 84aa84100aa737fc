"""One process's (one event loop's) side of the RabbitMQ layer: its connection, queue and
bindings, publishing, and delivery to the local channels. The guarantees are in
layer/rabbitmq.py's docstring; `RabbitMQChannelLayer` there is the Channels API over this."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import aio_pika
import aiormq
import msgpack
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractQueue,
    AbstractRobustConnection,
)

from .broker import BROKER_DOWN, LayerSettings, LayerUnavailable
from .inbox import Inbox
from .metrics import DROPPED, PUBLISH_SECONDS, PUBLISHED, RECEIVED, RECONNECTS

log = logging.getLogger(__name__)

T = TypeVar("T")


class Node:
    """Everything one event loop's share of the layer owns: connection, queue, inboxes."""

    def __init__(self, layer: LayerSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.layer = layer
        self.loop = loop
        host = socket.gethostname()[:24].replace("!", "")
        self.queue_name = f"{layer.broker.prefix}.{host}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self.inboxes: dict[str, Inbox] = {}
        self.members: dict[str, set[str]] = {}  # group -> local channels
        self.bound: set[str] = set()  # groups bound on the broker
        self.group_locks: dict[str, asyncio.Lock] = {}
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractChannel | None = None
        self.exchange: AbstractExchange | None = None
        self.queue: AbstractQueue | None = None
        # The AMQP channel under `channel` while it is open and restored (None
        # while the connection is down or restoring): the hot path publishes on it.
        self.underlay: aiormq.Channel | None = None
        self._sent = 0  # numbers the messages (AMQP message_id)
        self._opened = False  # the channel was open once (later opens follow an outage)
        self._started: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # --- connection -----------------------------------------------------------

    def started(self) -> asyncio.Future[None]:
        if self._started is None or (self._started.done() and self._started.exception()):
            self._started = self._own_task(self._start())
        return self._started

    def _own_task(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """A long-lived task of the layer, in a context of its own.

        Whoever first uses the layer may run inside a request's context (Django
        calls an async view through async_to_sync when a middleware is sync), and
        that context's thread executor is gone once the request ends. The broker
        connection, the sweeper and the reconnect listeners outlive every request,
        so none of them may inherit it: their sync_to_async calls would fail.
        """
        return self.loop.create_task(work, context=contextvars.Context())

    async def _start(self) -> None:
        delay = 0.2
        while True:
            try:
                await self._connect()
                break
            except BROKER_DOWN as exc:
                log.warning("layer: broker unreachable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._sweeper = self._own_task(self._sweep_forever())

    async def _connect(self) -> None:
        layer = self.layer
        connection = await aio_pika.connect_robust(
            layer.broker.url,
            client_properties={"connection_name": self.queue_name},
            reconnect_interval=layer.broker.reconnect_interval,
            # A hung broker (not a closed socket) is noticed after two missed beats.
            heartbeat=layer.broker.heartbeat,
        )
        connection.reconnect_callbacks.add(self._on_reconnect)
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            layer.broker.group_exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )
        queue = await channel.declare_queue(
            self.queue_name,
            exclusive=True,
            auto_delete=True,
            arguments={
                "x-max-length": layer.broker.queue_max_length,
                "x-overflow": "drop-head",
                "x-message-ttl": int(layer.expiry * 1000),
            },
        )
        self.connection, self.channel, self.exchange, self.queue = (
            connection,
            channel,
            exchange,
            queue,
        )
        connection.close_callbacks.add(self._on_connection_lost)
        # aio-pika calls this after every reopen of the channel (a broker restart,
        # or a channel-level error), once the queue and its bindings are restored.
        channel.reopen_callbacks.add(self._on_reopen)
        await self._on_reopen(channel)

    async def _on_reopen(self, channel: Any) -> None:
        """Consume on the (new) AMQP channel and publish on it from now on.

        Deliveries are taken straight from aiormq, without aio-pika's per-message
        IncomingMessage (about a sixth of the layer's CPU per delivery), so this
        consumer is ours to restore: it is, here, on every reopen.
        """
        try:
            underlay = await channel.get_underlay_channel()
            assert isinstance(underlay, aiormq.Channel)
            await underlay.basic_consume(self.queue_name, self._on_message, no_ack=True)
        except Exception:
            # aio-pika swallows a reopen callback's error: say it. The channel is
            # broken if this fails, so its next reopen calls us again.
            log.exception("layer: could not consume %s after a reopen", self.queue_name)
            raise
        self.underlay = underlay
        first, self._opened = not self._opened, True
        task = self._own_task(self._back(listeners=not first))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _back(self, *, listeners: bool) -> None:
        """The channel is (again) open: reconcile the bindings, then (after an outage) tell
        the listeners (they re-send what the outage may have cost the other processes:
        group copies published while it lasted were dropped)."""
        await self._reconcile_all()
        if listeners:
            for listener in self.layer.reconnect_listeners:
                await self._listen(listener)

    def _on_connection_lost(self, *_: Any) -> None:
        self.underlay = None  # publishes take the slow path until the restore is done

    def _on_reconnect(self, *_: Any) -> None:
        RECONNECTS.inc()
        log.warning("layer: reconnected to the broker; queue and bindings restored")

    @staticmethod
    async def _listen(listener: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await listener()
        except Exception:
            log.exception("layer: reconnect listener %s failed", listener)

    async def close(self) -> None:
        if self._started is not None and not self._started.done():
            # Let a connection attempt finish rather than cancel aiormq mid-handshake.
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(self._started), 10)
        for task in (self._sweeper, self._started, *self._background):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self.connection is not None:
            await self.connection.close()

    # --- shielded work --------------------------------------------------------

    async def shielded(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run `work` in its own task: a cancelled caller does not cancel it."""
        task: asyncio.Task[T] = self.loop.create_task(work())  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return await asyncio.shield(task)

    async def publish_to_others(self, group: str, body: bytes) -> None:
        """A group message for the other processes: published now if the broker is there,
        else dropped and counted (this process's members already have it). Before the
        first connection is up it waits for it, as `send` does."""
        if not self._opened:
            try:
                await self._publish("group", group, body, to_group=True)
            except LayerUnavailable:
                DROPPED.labels("unavailable").inc()
            return
        underlay = self.underlay
        if underlay is None or underlay.is_closed:
            DROPPED.labels("unavailable").inc()
            return
        try:
            await self._send(underlay, "group", self.layer.broker.group_exchange, group, body)
        except (*BROKER_DOWN, LayerUnavailable):
            DROPPED.labels("unavailable").inc()

    async def publish(self, kind: str, routing_key: str, body: bytes, *, to_group: bool) -> None:
        try:
            await self._publish(kind, routing_key, body, to_group=to_group)
        except LayerUnavailable:
            DROPPED.labels("unavailable").inc()
            raise

    async def _publish(self, kind: str, routing_key: str, body: bytes, *, to_group: bool) -> None:
        exchange = self.layer.broker.group_exchange if to_group else ""
        underlay = self.underlay
        if underlay is not None and not underlay.is_closed:
            # Hot path: straight onto the open AMQP channel, in the caller's task.
            # aiormq's basic_publish is cancellation-safe on its own (a publish
            # cancelled before it is written is rolled back; after, it stands).
            try:
                await self._send(underlay, kind, exchange, routing_key, body)
                return
            except BROKER_DOWN:
                pass  # the connection went away under us: wait for it below

        async def when_back() -> None:
            await self.started()
            await self._retry(
                lambda: self._send(self._live_underlay(), kind, exchange, routing_key, body)
            )

        await self.shielded(when_back)

    def _live_underlay(self) -> aiormq.Channel:
        """The open, restored AMQP channel. `underlay` is set only once the queue and
        its bindings are restored after a reopen, so a publish made between a
        reconnect and the restore is not routed nowhere: it waits."""
        underlay = self.underlay
        if underlay is None or underlay.is_closed:
            raise aio_pika.exceptions.ChannelInvalidStateError("the channel is being restored")
        return underlay

    async def _send(
        self, underlay: aiormq.Channel, kind: str, exchange: str, routing_key: str, body: bytes
    ) -> None:
        self._sent += 1
        begun = time.perf_counter()
        try:
            await underlay.basic_publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                properties=aiormq.spec.Basic.Properties(
                    delivery_mode=1,
                    message_id=str(self._sent),
                    # Group copies name their sender: its own queue skips them (its
                    # members got them from group_send directly).
                    app_id=self.queue_name if kind == "group" else None,
                ),
                timeout=self.layer.broker.publish_timeout,
                wait=False,  # the confirm awaited here implies the frame was written
            )
        except TimeoutError as exc:  # no confirm within publish_timeout: a hung broker
            raise LayerUnavailable(f"broker unavailable: no confirm in time ({exc})") from exc
        PUBLISH_SECONDS.observe(time.perf_counter() - begun)
        PUBLISHED.labels(kind).inc()

    def broker_away(self) -> bool:
        """Connected once, and the connection is down or being restored (an outage, not
        the start: a first connect is waited for)."""
        return self._opened and (self.underlay is None or self.underlay.is_closed)

    async def reconcile(self, group: str) -> None:
        """Make the broker binding for `group` match whether we have local members.

        While the broker is away this returns at once: the local membership already
        holds, and every group is reconciled again when the channel is back
        (`_on_reopen`)."""
        if self.broker_away():
            return

        async def attempt() -> None:
            await self.started()
            lock = self.group_locks.setdefault(group, asyncio.Lock())
            async with lock:
                wanted = bool(self.members.get(group))
                queue, exchange = self.queue, self.exchange
                assert queue is not None
                assert exchange is not None
                if wanted and group not in self.bound:
                    await self._retry(lambda: queue.bind(exchange, group))
                    self.bound.add(group)
                elif not wanted and group in self.bound:
                    await self._retry(lambda: queue.unbind(exchange, group))
                    self.bound.discard(group)
                if not wanted:
                    self.group_locks.pop(group, None)

        try:
            await self.shielded(attempt)
        except LayerUnavailable:
            if not self.broker_away():
                raise
            # The broker went away during the bind: redone once it is back.

    async def _reconcile_all(self) -> None:
        """After a reopen: bind the groups that gained members during the outage, unbind
        those that lost them."""
        for group in list({*self.members, *self.bound}):
            try:
                await self.reconcile(group)
            except Exception:
                log.exception("layer: group %s not reconciled after a reopen", group)

    async def _retry(self, call: Callable[[], Awaitable[Any]]) -> None:
        deadline = self.loop.time() + self.layer.broker.publish_timeout
        while True:
            try:
                await call()
                return
            except BROKER_DOWN as exc:
                if self.loop.time() >= deadline:
                    raise LayerUnavailable(f"broker unavailable: {exc}") from exc
                await asyncio.sleep(0.2)

    # --- delivery -------------------------------------------------------------

    async def _on_message(self, message: aiormq.abc.DeliveredMessage) -> None:
        if message.header.properties.app_id == self.queue_name:
            return  # our own group message: delivered locally when it was sent
        RECEIVED.inc()
        try:
            target, payload = msgpack.unpackb(message.body)
        except Exception:
            DROPPED.labels("undecodable").inc()
            return
        if "!" in target:
            self.deliver(target, payload)
        else:
            for channel in tuple(self.members.get(target, ())):
                self.deliver(channel, payload)

    def deliver(self, channel: str, payload: dict[str, Any]) -> None:
        inbox = self.inboxes.get(channel)
        if inbox is None:  # every message on our queue is for a channel of ours
            inbox = self.inboxes[channel] = Inbox()
        inbox.put(payload, self.layer.get_capacity(channel))

    async def receive(self, channel: str) -> dict[str, Any]:
        """The next message of `channel` (Inbox.get: several receivers may wait)."""
        inbox = self.inboxes.get(channel)
        if inbox is None:
            inbox = self.inboxes[channel] = Inbox()
        return await inbox.get(self.layer.expiry, self.loop)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.layer.expiry / 4))
            await self.sweep(time.monotonic() - self.layer.expiry)

    async def sweep(self, cutoff: float) -> None:
        """Forget the channels nobody has read since `cutoff` (their consumer is gone).

        A channel with any receiver waiting on it is in use, however long it waits.
        """
        stale = [
            name
            for name, inbox in self.inboxes.items()
            if inbox.waiter is None and inbox.touched < cutoff
        ]
        for name in stale:
            inbox = self.inboxes.get(name)
            # discard() below yields: a receiver may have come back to this channel since.
            if inbox is None or inbox.waiter is not None or inbox.touched >= cutoff:
                continue
            del self.inboxes[name]
            DROPPED.labels("expired").inc(len(inbox.messages or ()))
            for group in tuple(inbox.groups):
                await self.discard(group, name)

    async def discard(self, group: str, channel: str) -> None:
        members = self.members.get(group)
        if members is not None:
            members.discard(channel)
            if not members:
                del self.members[group]
        inbox = self.inboxes.get(channel)
        if inbox is not None:
            inbox.groups.discard(group)
        await self.reconcile(group)
