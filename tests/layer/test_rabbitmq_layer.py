"""The RabbitMQ channel layer against the real broker on this machine.

The first group of tests is a contract run on both the in-memory layer and
ours, so the game behaves the same in the embedded mode and in the fleet.
The rest prove the defects known in channels-rabbitmq 4.0.1 are absent here
(see ../shared/LAYER-NOTES.md): cancellation, slow consumers, silent drops,
vhost, broker restarts. The module's layers live in a throwaway vhost (`rabbitmq_url`,
tests/conftest.py): the group exchange has a fixed name.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiormq
import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import BaseChannelLayer, InMemoryChannelLayer
from prometheus_client import REGISTRY

from layer.rabbitmq import LayerUnavailable, RabbitMQChannelLayer
from tests.support.broker import broker_stopped

ROOT = Path(__file__).resolve().parents[2]


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("tictac_layer_dropped_total", {"reason": reason}) or 0.0


async def drain(layer: BaseChannelLayer, channel: str, wait: float = 0.3) -> list[Any]:
    got = []
    while True:
        try:
            got.append(await asyncio.wait_for(layer.receive(channel), wait))
        except TimeoutError:
            return got


def waiting_receivers(layer: BaseChannelLayer, channel: str) -> int:
    """How many receive() calls are waiting on `channel` right now (from the layer's inside)."""
    if isinstance(layer, RabbitMQChannelLayer):
        waiter = layer._node().inboxes[channel].waiter
        return 0 if waiter is None else len(waiter) if isinstance(waiter, list) else 1
    assert isinstance(layer, InMemoryChannelLayer)
    queue = layer.channels.get(channel)
    return 0 if queue is None else len(queue._getters)


async def until(condition: Callable[[], bool], turns: int = 100) -> None:
    """Let the event loop run until `condition` holds (in loop turns, not in time)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"not so after {turns} turns of the event loop")


def patience(layer: BaseChannelLayer) -> float:
    """How long a receiver may take before the test calls it stuck: a guard against a
    hang, not a speed limit (a broker round trip for RabbitMQ, a few loop turns else)."""
    return 10.0 if isinstance(layer, RabbitMQChannelLayer) else 1.0


def known_to_hang_in_memory(request: pytest.FixtureRequest, layer: BaseChannelLayer) -> None:
    """channels 4.3.2's InMemoryChannelLayer forgets a channel's queue once a receive()
    leaves it empty (returned or cancelled) while other receivers still wait on that queue:
    they never get the channel's next messages. Ours is held to the contract; the
    reference layer is expected to fail it, and must say so if it is ever fixed."""
    if isinstance(layer, InMemoryChannelLayer):
        request.applymarker(
            pytest.mark.xfail(
                reason="InMemoryChannelLayer drops a queue other receivers wait on",
                raises=TimeoutError,
                strict=True,
            )
        )


@pytest.fixture(params=["memory", "rabbitmq"])
async def layer(request: pytest.FixtureRequest) -> AsyncIterator[BaseChannelLayer]:
    if request.param == "memory":
        yield InMemoryChannelLayer(capacity=10)
        return
    rabbit = RabbitMQChannelLayer(request.getfixturevalue("rabbitmq_url"), capacity=10)
    yield rabbit
    await rabbit.close()


@pytest.fixture
async def rabbit(rabbitmq_url: str) -> AsyncIterator[RabbitMQChannelLayer]:
    layer = RabbitMQChannelLayer(rabbitmq_url, capacity=10, publish_timeout=30)
    yield layer
    await layer.close()


@pytest.fixture
async def other_rabbit(rabbitmq_url: str) -> AsyncIterator[RabbitMQChannelLayer]:
    """A second, independent node: its own connection and exclusive queue."""
    layer = RabbitMQChannelLayer(rabbitmq_url, capacity=10, publish_timeout=30)
    yield layer
    await layer.close()


# --- contract: the same behaviour on both layers ---------------------------------


async def test_send_reaches_the_channel(layer: BaseChannelLayer) -> None:
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "hello", "n": 1, "raw": b"\x00\xff"})
    assert await asyncio.wait_for(layer.receive(channel), 5) == {
        "type": "hello",
        "n": 1,
        "raw": b"\x00\xff",
    }


async def test_group_send_reaches_every_member_once(layer: BaseChannelLayer) -> None:
    a, b, c = [await layer.new_channel() for _ in range(3)]
    await layer.group_add("room.one", a)
    await layer.group_add("room.one", b)
    await layer.group_add("room.two", c)
    await layer.group_send("room.one", {"type": "state", "v": 1})
    assert await drain(layer, a) == [{"type": "state", "v": 1}]
    assert await drain(layer, b) == [{"type": "state", "v": 1}]
    assert await drain(layer, c) == []


async def test_group_discard_stops_delivery(layer: BaseChannelLayer) -> None:
    a, b = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("room.one", a)
    await layer.group_add("room.one", b)
    await layer.group_discard("room.one", a)
    await layer.group_send("room.one", {"type": "state"})
    assert await drain(layer, a) == []
    assert await drain(layer, b) == [{"type": "state"}]
    await layer.group_discard("room.one", b)
    await layer.group_send("room.one", {"type": "state"})
    assert await drain(layer, b) == []


async def test_group_send_keeps_order_per_sender(layer: BaseChannelLayer) -> None:
    a = await layer.new_channel()
    await layer.group_add("room.order", a)
    for i in range(10):
        await layer.group_send("room.order", {"type": "n", "i": i})
    assert [m["i"] for m in await drain(layer, a)] == list(range(10))


async def test_full_channel_loses_its_own_overflow_only(layer: BaseChannelLayer) -> None:
    idle, live = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("room.busy", idle)
    await layer.group_add("room.busy", live)
    received = []
    for i in range(25):
        await layer.group_send("room.busy", {"type": "n", "i": i})
        received.append(await asyncio.wait_for(layer.receive(live), 5))
    assert [m["i"] for m in received] == list(range(25))
    assert [m["i"] for m in await drain(layer, idle)] == list(range(10))  # capacity 10


async def test_group_send_to_an_empty_group_is_fine(layer: BaseChannelLayer) -> None:
    await layer.group_send("room.nobody", {"type": "state"})


async def test_bad_names_are_refused(layer: BaseChannelLayer) -> None:
    channel = await layer.new_channel()
    with pytest.raises(TypeError):
        await layer.group_add("bad group!", channel)
    with pytest.raises(TypeError):
        await layer.group_send("x" * 101, {"type": "t"})


async def test_concurrent_receivers_on_one_channel_get_every_message_once(
    layer: BaseChannelLayer, request: pytest.FixtureRequest
) -> None:
    known_to_hang_in_memory(request, layer)
    channel = await layer.new_channel()
    got: asyncio.Queue[int] = asyncio.Queue()

    async def receiver() -> None:
        while True:
            message = await layer.receive(channel)
            if message["type"] == "stop":
                return
            got.put_nowait(message["i"])

    receivers = [asyncio.ensure_future(receiver()) for _ in range(3)]
    try:
        await until(lambda: waiting_receivers(layer, channel) == 3)
        seen = []
        for batch in range(8):  # three at a time: all three receivers woken together
            for i in range(3 * batch, 3 * batch + 3):
                await layer.send(channel, {"type": "n", "i": i})
            for _ in range(3):
                seen.append(await asyncio.wait_for(got.get(), patience(layer)))
        for _ in receivers:  # each receiver leaves on the first stop it gets
            await layer.send(channel, {"type": "stop"})
        await asyncio.wait_for(asyncio.gather(*receivers), patience(layer))
    finally:
        for task in receivers:
            task.cancel()
        await asyncio.gather(*receivers, return_exceptions=True)
    assert sorted(seen) == list(range(24))  # none lost, none twice
    assert got.empty()


async def test_a_receiver_cancelled_while_waiting_does_not_swallow_a_message(
    layer: BaseChannelLayer, request: pytest.FixtureRequest
) -> None:
    known_to_hang_in_memory(request, layer)
    channel = await layer.new_channel()
    cancelled = asyncio.ensure_future(layer.receive(channel))
    other = asyncio.ensure_future(layer.receive(channel))
    try:
        await until(lambda: waiting_receivers(layer, channel) == 2)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        await layer.send(channel, {"type": "kept"})
        assert await asyncio.wait_for(other, patience(layer)) == {"type": "kept"}
    finally:
        other.cancel()
        await asyncio.gather(other, return_exceptions=True)


async def test_a_receiver_woken_then_cancelled_passes_the_message_on(
    layer: BaseChannelLayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel = await layer.new_channel()
    woken = asyncio.ensure_future(layer.receive(channel))
    other = asyncio.ensure_future(layer.receive(channel))
    try:
        await until(lambda: waiting_receivers(layer, channel) == 2)
        if isinstance(layer, RabbitMQChannelLayer):
            node = layer._node()
            deliver = node.deliver
            woke: list[list[bool]] = []

            def deliver_then_cancel(to: str, payload: dict[str, Any]) -> None:
                deliver(to, payload)  # the broker's delivery wakes the oldest receiver...
                waiters = node.inboxes[channel].waiter
                woke.append([w.done() for w in waiters] if isinstance(waiters, list) else [])
                woken.cancel()  # ... which is cancelled before it runs

            monkeypatch.setattr(node, "deliver", deliver_then_cancel)
            await layer.send(channel, {"type": "passed"})
            assert await asyncio.wait_for(other, patience(layer)) == {"type": "passed"}
            assert woke == [[True, False]]  # it was the cancelled receiver that was woken
        else:
            await layer.send(channel, {"type": "passed"})  # hands it to the oldest receiver
            woken.cancel()  # which has not run since
            assert await asyncio.wait_for(other, patience(layer)) == {"type": "passed"}
        with pytest.raises(asyncio.CancelledError):
            await woken
    finally:
        for task in (woken, other):
            task.cancel()
        await asyncio.gather(woken, other, return_exceptions=True)


# --- across processes -------------------------------------------------------------


async def test_groups_and_send_work_across_two_processes(
    rabbit: RabbitMQChannelLayer, rabbitmq_url: str
) -> None:
    peer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.layer_peer",
        rabbitmq_url,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert peer.stdin is not None
    assert peer.stdout is not None

    async def command(line: str) -> str:
        peer.stdin.write(f"{line}\n".encode())  # type: ignore[union-attr]
        await peer.stdin.drain()  # type: ignore[union-attr]
        line_bytes: bytes = await asyncio.wait_for(peer.stdout.readline(), 20)  # type: ignore[union-attr]
        return line_bytes.decode().strip()

    try:
        ready = (await asyncio.wait_for(peer.stdout.readline(), 20)).decode().split()
        assert ready[0] == "ready"
        peer_channel = ready[1]
        me = await rabbit.new_channel()
        await rabbit.group_add("room.shared", me)
        assert await command("add room.shared") == "ok"

        await rabbit.group_send("room.shared", {"type": "state", "v": 1, "reply_to": me})
        got = await drain(rabbit, me, wait=2)
        # Our own member got the group message, the peer echoed its copy back to us.
        assert {"type": "state", "v": 1, "reply_to": me} in got
        assert {"type": "echo", "v": 1, "reply_to": me, "peer": peer_channel} in got

        await rabbit.send(peer_channel, {"type": "direct", "reply_to": me})
        echo = await asyncio.wait_for(rabbit.receive(me), 5)
        assert echo == {"type": "echo", "reply_to": me, "peer": peer_channel}

        assert await command("discard room.shared") == "ok"
        await rabbit.group_send("room.shared", {"type": "state", "v": 2, "reply_to": me})
        assert await drain(rabbit, me, wait=1) == [{"type": "state", "v": 2, "reply_to": me}]
        assert await command("quit") == ""
    finally:
        if peer.returncode is None:
            peer.kill()
        await peer.wait()


# --- defects of channels-rabbitmq that must not exist here --------------------------


async def test_cancelled_calls_do_not_break_the_layer(rabbit: RabbitMQChannelLayer) -> None:
    channel = await rabbit.new_channel()
    for round_ in range(30):
        calls = [
            rabbit.group_add(f"room.c{round_}", channel),
            rabbit.group_send(f"room.c{round_}", {"type": "t"}),
            rabbit.send(channel, {"type": "t"}),
            rabbit.group_discard(f"room.c{round_}", channel),
        ]
        tasks = [asyncio.ensure_future(call) for call in calls]
        await asyncio.sleep(0.0005 * (round_ % 5))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await drain(rabbit, channel)
    # Every kind of call still works afterwards, in this process.
    await rabbit.group_add("room.after", channel)
    await rabbit.group_send("room.after", {"type": "after"})
    await rabbit.send(channel, {"type": "direct"})
    assert await drain(rabbit, channel, wait=2) == [{"type": "after"}, {"type": "direct"}]


async def test_cancelled_receive_loses_nothing(rabbit: RabbitMQChannelLayer) -> None:
    channel = await rabbit.new_channel()
    waiting = asyncio.ensure_future(rabbit.receive(channel))
    await asyncio.sleep(0.05)
    waiting.cancel()
    await rabbit.send(channel, {"type": "kept"})
    assert await asyncio.wait_for(rabbit.receive(channel), 5) == {"type": "kept"}


async def test_an_idle_channel_holds_no_buffer_and_one_waiter(
    rabbit: RabbitMQChannelLayer,
) -> None:
    """The per-socket footprint: an idle channel keeps no message buffer, and its one
    receiver is a bare future; a list of futures exists only while several wait."""
    channel = await rabbit.new_channel()
    await rabbit.send(channel, {"type": "t"})
    assert await asyncio.wait_for(rabbit.receive(channel), 5) == {"type": "t"}
    inbox = rabbit._node().inboxes[channel]
    assert not hasattr(inbox, "__dict__")
    first = asyncio.ensure_future(rabbit.receive(channel))
    await until(lambda: inbox.waiter is not None)
    assert inbox.messages is None
    assert isinstance(inbox.waiter, asyncio.Future)
    second = asyncio.ensure_future(rabbit.receive(channel))
    await until(lambda: isinstance(inbox.waiter, list))
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert isinstance(inbox.waiter, asyncio.Future)  # back to the single future
    second.cancel()
    await asyncio.gather(second, return_exceptions=True)
    assert inbox.waiter is None
    assert inbox.messages is None


async def test_the_sweeper_keeps_a_channel_while_any_of_its_receivers_waits(
    rabbit: RabbitMQChannelLayer,
) -> None:
    node = rabbit._node()
    channel = await rabbit.new_channel()
    later = time.monotonic() + 3600  # a sweep an hour from now: every channel looks unread
    first = asyncio.ensure_future(rabbit.receive(channel))
    second = asyncio.ensure_future(rabbit.receive(channel))
    try:
        await until(lambda: waiting_receivers(rabbit, channel) == 2)
        await node.sweep(later)
        assert channel in node.inboxes
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await node.sweep(later)
        assert channel in node.inboxes
        await rabbit.send(channel, {"type": "still"})  # reaches the receiver left
        assert await asyncio.wait_for(second, 5) == {"type": "still"}
        await node.sweep(later)  # nobody waits any more: forgotten
        assert channel not in node.inboxes
    finally:
        for task in (first, second):
            task.cancel()
        await asyncio.gather(first, second, return_exceptions=True)


async def test_unread_channel_does_not_stall_the_process(rabbit: RabbitMQChannelLayer) -> None:
    """1,000 messages to a channel nobody reads; a live channel of the same process keeps up."""
    before = dropped("full")
    stuck, live = await rabbit.new_channel(), await rabbit.new_channel()
    await rabbit.group_add("room.stuck", stuck)
    await rabbit.group_add("room.live", live)
    await asyncio.gather(*(rabbit.group_send("room.stuck", {"type": "t"}) for _ in range(1000)))
    started = time.monotonic()
    await rabbit.group_send("room.live", {"type": "live"})
    assert await asyncio.wait_for(rabbit.receive(live), 2) == {"type": "live"}
    assert time.monotonic() - started < 1.0
    assert len(await drain(rabbit, stuck)) == 10  # capacity
    assert dropped("full") - before == 990  # counted, not silent


async def test_messages_older_than_expiry_are_dropped_and_counted(rabbitmq_url: str) -> None:
    layer = RabbitMQChannelLayer(rabbitmq_url, expiry=1)
    try:
        before = dropped("expired")
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "old"})
        await asyncio.sleep(0.3)  # delivered into the local buffer, not read
        await asyncio.sleep(1.0)
        await layer.send(channel, {"type": "fresh"})
        assert await asyncio.wait_for(layer.receive(channel), 5) == {"type": "fresh"}
        assert dropped("expired") - before == 1
    finally:
        await layer.close()


async def test_large_capacity_still_delivers(
    rabbit: RabbitMQChannelLayer, rabbitmq_url: str
) -> None:
    """channels-rabbitmq delivers nothing above 65535 (a 16-bit prefetch); no such limit here."""
    layer = RabbitMQChannelLayer(rabbitmq_url, capacity=100_000)
    try:
        channel = await layer.new_channel()
        await layer.group_add("room.big", channel)
        await layer.group_send("room.big", {"type": "t"})
        assert await asyncio.wait_for(layer.receive(channel), 5) == {"type": "t"}
    finally:
        await layer.close()


async def test_ping_makes_a_round_trip_through_the_broker(rabbit: RabbitMQChannelLayer) -> None:
    await asyncio.wait_for(rabbit.ping(), 5)


async def test_a_channel_error_does_not_stop_delivery(rabbit: RabbitMQChannelLayer) -> None:
    """The broker closes an AMQP channel on a channel-level error (here: a publish to an
    exchange that does not exist). aio-pika reopens it; the layer's own consumer on
    that channel must come back with it, or the process would stop hearing its groups."""
    channel = await rabbit.new_channel()
    await rabbit.group_add("room.reopen", channel)
    node = rabbit._node()
    broken = node.underlay
    assert broken is not None
    with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
        await broken.basic_publish(b"x", exchange="tictac.no-such-exchange", routing_key="r")
    deadline = time.monotonic() + 10
    while True:
        await rabbit.group_send("room.reopen", {"type": "after"})
        if {"type": "after"} in await drain(rabbit, channel, wait=0.5):
            break
        assert time.monotonic() < deadline, "no delivery within 10 s of the channel error"
    assert node.underlay is not broken


# --- broker outage ----------------------------------------------------------------------


async def test_groups_deliver_again_after_a_broker_restart(
    rabbit: RabbitMQChannelLayer, other_rabbit: RabbitMQChannelLayer
) -> None:
    reconnects = REGISTRY.get_sample_value("tictac_layer_reconnects_total") or 0.0
    mine, theirs = await rabbit.new_channel(), await other_rabbit.new_channel()
    await rabbit.group_add("room.restart", mine)
    await other_rabbit.group_add("room.restart", theirs)
    await rabbit.group_send("room.restart", {"type": "before"})
    assert await asyncio.wait_for(other_rabbit.receive(theirs), 5) == {"type": "before"}
    await drain(rabbit, mine)

    lost = dropped("unavailable")
    with broker_stopped():
        # The local member hears it at once; the other process's copy is dropped and
        # counted, without waiting for the broker.
        started = time.monotonic()
        await rabbit.group_send("room.restart", {"type": "during"})
        assert time.monotonic() - started < 1.0
        assert await drain(rabbit, mine) == [{"type": "during"}]
        assert dropped("unavailable") == lost + 1
        # A member that joins during the outage is bound once the broker is back.
        late = await other_rabbit.new_channel()
        await asyncio.wait_for(other_rabbit.group_add("room.late", late), 1.0)
    back = time.monotonic()
    assert await drain(other_rabbit, theirs, wait=0.5) == []
    # Bindings were restored without help: both nodes hear the group again.
    deadline = time.monotonic() + 10
    while True:
        await rabbit.group_send("room.restart", {"type": "after"})
        got = await drain(other_rabbit, theirs, wait=0.5)
        if {"type": "after"} in got:
            break
        assert time.monotonic() < deadline, "groups did not deliver within 10 s of the broker"
    assert time.monotonic() - back < 10
    assert (REGISTRY.get_sample_value("tictac_layer_reconnects_total") or 0.0) >= reconnects + 2
    deadline = time.monotonic() + 10
    while {"type": "late"} not in await drain(other_rabbit, late, wait=0.5):
        await rabbit.group_send("room.late", {"type": "late"})
        assert time.monotonic() < deadline, "a group joined during the outage was never bound"


async def test_a_group_message_reaches_local_members_once_and_without_the_broker(
    rabbit: RabbitMQChannelLayer,
) -> None:
    """Local members get group messages from group_send itself; the copy the broker
    routes back to this process is skipped (no duplicate), and nothing is counted lost."""
    a, b = await rabbit.new_channel(), await rabbit.new_channel()
    await rabbit.group_add("room.local", a)
    await rabbit.group_add("room.local", b)
    lost = dropped("unavailable")
    await rabbit.group_send("room.local", {"type": "t"})
    # Delivered before any broker round trip: already in both buffers.
    assert await asyncio.wait_for(rabbit.receive(a), 0.01) == {"type": "t"}
    assert await asyncio.wait_for(rabbit.receive(b), 0.01) == {"type": "t"}
    await rabbit.ping()  # a round trip: the broker's copy has come back by now
    assert await drain(rabbit, a) == []
    assert await drain(rabbit, b) == []
    assert dropped("unavailable") == lost


async def test_reconnect_listeners_outlive_the_request_that_started_the_layer(
    rabbit: RabbitMQChannelLayer,
) -> None:
    """Django runs an async view through async_to_sync when a middleware is sync; if such
    a request (a /readyz probe) is the first to use the layer, the layer's tasks must not
    inherit that request's thread executor, which is gone once the request ends. A
    listener that reads the database after a reconnect must still reach it."""

    def probe_from_sync_code() -> None:
        async_to_sync(rabbit.ping)()

    await sync_to_async(probe_from_sync_code)()
    read: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def listener() -> None:
        try:
            read.set_result(await sync_to_async(threading.get_ident)())
        except BaseException as exc:
            read.set_exception(exc)
            raise

    rabbit.on_reconnect(listener)
    with broker_stopped():
        await asyncio.sleep(0.5)
    assert isinstance(await asyncio.wait_for(read, 30), int)


async def test_send_gives_up_after_publish_timeout_while_the_broker_is_down(
    rabbitmq_url: str,
) -> None:
    layer = RabbitMQChannelLayer(rabbitmq_url, publish_timeout=1.0)
    try:
        channel = await layer.new_channel()
        await layer.group_add("room.down", channel)
        with broker_stopped():
            started = time.monotonic()
            with pytest.raises(LayerUnavailable):
                await layer.send(channel, {"type": "t"})
            assert time.monotonic() - started < 5
            await layer.group_send("room.down", {"type": "local"})  # never raises
            assert await drain(layer, channel) == [{"type": "local"}]
        # and the same layer works again afterwards
        deadline = time.monotonic() + 15
        while True:
            try:
                await layer.send(channel, {"type": "back"})
                break
            except LayerUnavailable:
                assert time.monotonic() < deadline
        assert {"type": "back"} in await drain(layer, channel, wait=2)
    finally:
        await layer.close()
