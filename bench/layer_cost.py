"""Cost of one group_send through the RabbitMQ layer, without WebSockets.

One layer node (one AMQP connection), a group with two local members, N group
sends (20 in flight), every delivery read. Prints the process CPU per send.

Wall-clock CPU is noisy on a shared machine; instruction counts are not. For
those, run it twice under callgrind and take the difference per send:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python -m bench.layer_cost 500     # "Collected : <instructions>"
    valgrind ... -m bench.layer_cost 1500
    (I(1500) - I(500)) / 1000 = instructions per group_send

Measured on 2026-11-26 with the scratch script this file grew from (same layer,
same workload): 1,305,775 at 0cadd34 (aio-pika Message/Exchange, a shielded task
per publish, aio-pika IncomingMessage), 817,061 at the lean hot path.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from layer.rabbitmq import RabbitMQChannelLayer

URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")


async def main(sends: int, in_flight: int = 20) -> None:
    layer = RabbitMQChannelLayer(URL, capacity=sends + 10)
    members = [await layer.new_channel() for _ in range(2)]
    for channel in members:
        await layer.group_add("room.cost", channel)
    received, wanted, done = 0, 2, asyncio.Event()

    async def read(channel: str) -> None:
        nonlocal received
        while True:
            await layer.receive(channel)
            received += 1
            if received >= wanted:
                done.set()

    readers = [asyncio.create_task(read(channel)) for channel in members]
    await layer.group_send("room.cost", {"type": "game.relay", "text": "warm"})
    await done.wait()
    received, wanted = 0, 2 * sends
    done.clear()
    slots = asyncio.Semaphore(in_flight)

    async def send(i: int) -> None:
        async with slots:
            await layer.group_send(
                "room.cost", {"type": "game.relay", "text": f'{{"payload":{i}}}'}
            )

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(send(i) for i in range(sends)))
    await done.wait()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"{sends} group_sends, {received} deliveries in {wall:.2f}s: "
        f"{1e6 * cpu / sends:.0f} us CPU per send, {sends / wall:,.0f} sends/s"
    )
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    await layer.close()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000))
