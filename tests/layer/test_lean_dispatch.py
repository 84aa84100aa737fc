"""The lean consumer loop's one-slot mailbox: order, backpressure, cancellation.

(The loop itself runs under every consumer test: `GameRoom` uses it.)
"""

from __future__ import annotations

import asyncio

from realtime.dispatch import _Mailbox


async def test_messages_arrive_in_order_and_a_second_put_waits_for_the_get() -> None:
    box = _Mailbox(asyncio.get_running_loop())
    await box.put(1)
    second = asyncio.ensure_future(box.put(2))
    await asyncio.sleep(0.01)
    assert not second.done()  # the slot is full: backpressure on the reader
    assert await box.get() == 1
    await asyncio.wait_for(second, 1)
    assert await box.get() == 2


async def test_a_get_waits_for_a_put() -> None:
    box = _Mailbox(asyncio.get_running_loop())
    got = asyncio.ensure_future(box.get())
    await asyncio.sleep(0.01)
    assert not got.done()
    await box.put("x")
    assert await asyncio.wait_for(got, 1) == "x"


async def test_two_readers_each_deliver_everything_in_their_own_order() -> None:
    box = _Mailbox(asyncio.get_running_loop())

    async def reader(tag: str) -> None:
        for i in range(200):
            await box.put((tag, i))

    readers = [asyncio.ensure_future(reader(tag)) for tag in ("ws", "layer")]
    got = [await asyncio.wait_for(box.get(), 1) for _ in range(400)]
    await asyncio.gather(*readers)
    for tag in ("ws", "layer"):
        assert [i for t, i in got if t == tag] == list(range(200))


async def test_a_cancelled_waiting_put_loses_its_turn_without_blocking_the_other() -> None:
    box = _Mailbox(asyncio.get_running_loop())
    await box.put("first")
    cancelled = asyncio.ensure_future(box.put("never"))
    waiting = asyncio.ensure_future(box.put("second"))
    await asyncio.sleep(0.01)
    assert await box.get() == "first"  # wakes `cancelled`, which is cancelled before it runs
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    assert await asyncio.wait_for(box.get(), 1) == "second"
    await asyncio.wait_for(waiting, 1)
