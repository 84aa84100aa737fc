"""`python -m tests.workers.crashing_worker URL LIMIT`: a worker of workers/runtime.py whose
`crash` jobs kill their process (`os._exit`, no exception the runtime could catch: as a
segfault or an OOM kill would) and whose `fine` jobs print their key. For the poison test
of tests/workers/test_job_topology.py; no Django, no database."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

from workers.runtime import Worker


async def main(url: str, limit: int) -> None:
    async def crash(payload: dict[str, Any]) -> None:
        print(f"crashing on {payload.get('key')}", flush=True)
        os._exit(3)

    async def fine(payload: dict[str, Any]) -> None:
        print(f"fine {payload.get('key')}", flush=True)

    worker = Worker(
        url,
        {"crash": crash, "fine": fine},
        concurrency=1,
        retry_delays=(0.2,),
        delivery_limit=limit,
        depth_seconds=0.5,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await worker.run(stop)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
