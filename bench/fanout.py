"""`make bench`: fan-out over persistent connections, every contender in one run.

R rooms x M members spread over the contender's replicas; a paced sender offers
a rate of deliveries (sends/s x M); every delivery is counted and timed in this
one client process (uvloop, cheap parsing). Each contender climbs a ladder of
rates until delivery falls below 100% or p99 exceeds 50 ms (or the client could
not offer 90% of the rate asked).

The game is one contender: 2 replicas (production settings, PostgreSQL and the
RabbitMQ layer) started once, R rooms of 2 seated players (X and O) and M - 2
spectators, and two ladders on the same servers, one after the other:

- moves: the players alternate scripted moves and ask for a rematch after each
  game; one action in flight per room, every member must get every `state`.
- relay: `{"data": ...}` frames; every member must get `{"payload": ...}`.

Both climb the same ladder, so the report can say "game path / relay path = R x".
With one action in flight per room the move ladder can offer at most
R x M / round-trip deliveries/s (50 rooms x 4 members at 20 ms: 10,000/s); a
rung above that fails on "offered < 90%", which is the right verdict for that
many rooms; give it more with --rooms.

Also measured (bench/sockets.py): memory per idle WebSocket (10k sockets on one game replica,
with and without a permessage-deflate offer), connects per second on one replica,
server (replica) CPU per delivered message, and for the move path replica and
PostgreSQL backend CPU per move. Results: a table on stdout, and
bench/results/<stamp>.{json,md,png}.

The parts: bench/contenders.py (who runs), servers.py (starting them), rooms.py (the
client), ladder.py (steps and sweeps), report.py (the table, plot and results files).
"""

from __future__ import annotations

import argparse
import resource
import signal
import sys
import time

from bench import socket_report, sockets
from bench.contenders import CONTENDERS, selected
from bench.ladder import Step, sweep
from bench.report import report, write_results
from bench.servers import RESULTS


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rooms", type=int, default=50, help="rooms (the move ladder: one action in flight each)"
    )
    parser.add_argument("--members", type=int, default=4, help="per room; the game seats 2")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--rates",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[250, 500, 1000, 2000, 3000, 4000, 6000, 8000, 12000, 16000, 24000],
        help="offered deliveries/s, comma-separated: one ladder for every contender and path",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated substrings of contender names (all its ladders) or row names"
        " (that ladder only): 'game' runs both game paths, 'game moves' only the moves",
    )
    parser.add_argument(
        "--idle", type=int, default=10000, help="idle sockets for the memory probe (0: skip)"
    )
    args = parser.parse_args()
    wanted = [w for w in args.only.split(",") if w]
    plan = [(c, ladders) for c in CONTENDERS if (ladders := selected(c, wanted))]
    if args.members < 2 and any(c.app == "game" for c, _ in plan):
        parser.error("the game needs --members >= 2 (two players)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = RESULTS / "logs" / stamp
    log_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[Step]] = {}
    for contender, ladders in plan:
        print(f"{contender.name}:", flush=True)
        results.update(await sweep(contender, ladders, args, log_dir))
    probe = None
    if args.idle:  # idle KiB per socket (deflate offered and not) and connects/s, one replica
        probe = await sockets.measure(sockets_n=args.idle, log_dir=log_dir)
    text = report(results, socket_report.table(probe) if probe else None, args)
    print("\n" + text)
    write_results(stamp, text, args, results, probe)
    print(f"\nwritten: bench/results/{stamp}.md .json .png")


if __name__ == "__main__":
    import uvloop

    # SIGTERM (a timeout, Ctrl-C's cousin) unwinds like Ctrl-C, so servers are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1:] * 2)
    uvloop.run(main())
