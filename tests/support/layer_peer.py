"""A second process on the RabbitMQ layer, driven over stdin/stdout by layer tests.

Commands (one per line): `add <group>`, `discard <group>`, `quit`. Every message
it receives is sent back to the channel named in the message's `reply_to`,
tagged with this process's channel name. It prints `ready <channel>` once, then
`ok` after each command.
"""

from __future__ import annotations

import asyncio
import sys

from layer.rabbitmq import RabbitMQChannelLayer


async def main(url: str) -> None:
    layer = RabbitMQChannelLayer(url)
    channel = await layer.new_channel()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def echo() -> None:
        while True:
            message = await layer.receive(channel)
            await layer.send(message["reply_to"], {**message, "type": "echo", "peer": channel})

    echoing = asyncio.create_task(echo())
    print(f"ready {channel}", flush=True)
    while line := (await reader.readline()).decode().strip():
        command, _, group = line.partition(" ")
        if command == "add":
            await layer.group_add(group, channel)
        elif command == "discard":
            await layer.group_discard(group, channel)
        elif command == "quit":
            break
        print("ok", flush=True)
    echoing.cancel()
    await layer.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
