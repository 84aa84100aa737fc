"""Computer moves per second with a think time: bench/computer.py's run with
BOT_THINK_SECONDS set (0.4 s by default, the production default) instead of 0.

With the think time held by a worker's job slot (before the delay queue) a worker made at
most `concurrency / think` computer moves per second (4 / 0.4 s = 10); with the think
time in the broker (a delay queue, workers/publisher.py) the rooms' turns overlap and
the rate is bounded by the rooms (each room waits one think time per computer move) and
the machine.

    .venv/bin/python -m bench.bot_think [--think 0.4] [--rooms 50] [--seconds 15] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import resource
import time

from bench import computer
from bench.contenders import Contender
from bench.servers import RESULTS


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--think", type=float, default=0.4)
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    args = parser.parse_args()
    computer.GAME = Contender(
        f"game, 2 replicas, human vs computer, think {args.think:g} s",
        "game",
        2,
        "moves",
        {"BOT_THINK_SECONDS": str(args.think)},
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = RESULTS / "logs" / f"{stamp}-bot-think"
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"think {args.think:g} s, {args.rooms} rooms, {args.seconds:g} s per worker count")
    print("| job workers | computer moves/s | computer move p50 / p99 ms | errors |")
    print("|---|---|---|---|")
    for workers in args.workers:
        row = await computer.run(workers, args, log_dir)
        print(
            f"| {workers} | {row.computer_moves_per_s:,.1f}"
            f" | {row.computer_p50_ms:,.0f} / {row.computer_p99_ms:,.0f} | {row.errors} |",
            flush=True,
        )


if __name__ == "__main__":
    import uvloop

    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1:] * 2)
    uvloop.run(main())
