"""`python -m bench.sockets`: what one open WebSocket costs a game replica.

One game replica started as `make bench` starts them (`bench.servers`: PostgreSQL,
RabbitMQ, production settings), a fresh one for each measurement (`--only`, default
`idle,connects`):

- `idle`: replica RSS growth per socket over N idle sockets (`--sockets`, default 10,000,
  one room each) after a warm-up of 200, (a) with the client offering permessage-deflate
  as browsers do (`permessage-deflate; client_max_window_bits`) and (b) without the offer
  (`idle-deflate`, `idle-plain`: one of them);
- `connects`: M sockets (`--connects`, default 2,000) opened `--concurrency` (50) at a
  time on a warmed-up replica: sockets/s and replica CPU per connect, the presence
  broadcast each connect schedules included (`connects-deflate`, `connects-plain`);
- `trace`: a tracemalloc breakdown per idle socket by file, by line and by line of this
  repository, taken in the replica (PYTHONTRACEMALLOC and a SIGUSR2 handler from a
  temporary sitecustomize: no hook in the app; the snapshots stay in the log directory);
- `wire`: the bytes a spectator receives during one game under each permessage-deflate
  setting, the zlib memory each keeps per idle socket and its CPU per frame.

A socket counts only once it got `welcome` and `state`. `--browser-headers` adds the rest
of Chrome's handshake headers (the server keeps them in every socket's scope); `--env
KEY=VALUE` goes to the replica. Everything stays on 127.0.0.1, bounded in count and time;
all sockets are closed at the end, concurrently, a bounded number at a time.

The parts: bench/socket_pool.py (the replica and the client sockets), socket_probes.py
(idle, connects), socket_trace.py, socket_wire.py; the tables: socket_report.py.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bench.servers import RESULTS
from bench.socket_pool import Probe
from bench.socket_probes import connect_rate, idle_memory
from bench.socket_report import Report, table
from bench.socket_trace import trace
from bench.socket_wire import wire


async def measure(
    *,
    sockets_n: int = 10_000,
    connects_n: int = 2_000,
    concurrency: int = 50,
    log_dir: Path | None = None,
    env: dict[str, str] | None = None,
    parts: tuple[str, ...] = ("idle", "connects"),
    trace_sockets: int = 2_000,
    trace_deflate: bool = True,
    trace_frames: int = 12,
    browser: bool = False,
) -> Report:
    """Run the chosen parts ("idle", "idle-deflate", "idle-plain", "connects",
    "connects-deflate", "connects-plain", "trace", "wire"), each on a fresh replica, with
    `env` added to the replica's environment."""
    env = env or {}
    log_dir = log_dir or RESULTS / "logs" / f"sockets-{time.strftime('%Y%m%d-%H%M%S')}"
    log_dir.mkdir(parents=True, exist_ok=True)
    probe = Probe(log_dir, env, concurrency, browser)
    report = Report(env=env, browser_headers=browser)
    for deflate in deflates(parts, "idle"):
        idle = await idle_memory(sockets_n, deflate=deflate, probe=probe)
        print(f"  {idle}", flush=True)
        report.idle.append(idle)
    for deflate in deflates(parts, "connects"):
        rate = await connect_rate(connects_n, deflate=deflate, probe=probe)
        print(f"  {rate}", flush=True)
        report.connects.append(rate)
    if "trace" in parts:
        report.trace = await trace(
            trace_sockets, deflate=trace_deflate, probe=probe, frames=trace_frames
        )
    if "wire" in parts:
        _, report.wire = await wire(log_dir, env)
    return report


def deflates(parts: tuple[str, ...], name: str) -> list[bool]:
    """The offers `parts` asks `name` to run with: both for "idle", one for "idle-plain"."""
    both = ((True, f"{name}-deflate"), (False, f"{name}-plain"))
    return [deflate for deflate, part in both if name in parts or part in parts]


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sockets", type=int, default=10_000, help="idle sockets (default 10,000)")
    parser.add_argument("--connects", type=int, default=2_000, help="sockets for the connect rate")
    parser.add_argument("--concurrency", type=int, default=50, help="handshakes in flight")
    parser.add_argument(
        "--only",
        default="idle,connects",
        help="comma-separated: idle, idle-deflate, idle-plain, connects, connects-deflate,"
        " connects-plain, trace, wire",
    )
    parser.add_argument("--trace-sockets", type=int, default=2_000)
    parser.add_argument("--trace-frames", type=int, default=12, help="tracemalloc depth")
    parser.add_argument(
        "--trace-plain", action="store_true", help="trace without the deflate offer"
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="replica environment"
    )
    parser.add_argument(
        "--browser-headers",
        action="store_true",
        help="send Chrome's handshake headers too (the server keeps them in each scope)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    report = await measure(
        sockets_n=args.sockets,
        connects_n=args.connects,
        concurrency=args.concurrency,
        env=env,
        parts=tuple(p for p in args.only.split(",") if p),
        trace_sockets=args.trace_sockets,
        trace_deflate=not args.trace_plain,
        trace_frames=args.trace_frames,
        browser=args.browser_headers,
    )
    print("\n" + table(report))
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=1))


if __name__ == "__main__":
    import uvloop

    # SIGTERM unwinds like Ctrl-C, so the replica and its database are cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1:] * 2)
    uvloop.run(main())
