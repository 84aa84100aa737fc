"""Human against the computer: R rooms on 2 game replicas, 1, 2 and 4 job workers.

In each room one human socket takes X, invites the computer (`bot`, level
perfect) and then plays as fast as it can: it moves the moment its turn comes
(the first free cell), asks for a rematch the moment a game ends. The computer's
moves are made by the job workers (`bot.move` jobs, BOT_THINK_SECONDS=0 here),
so the run shows what the worker fleet's fast path sustains and where the
queueing lands when the cores run out:

- human move: the human's `move` sent -> the `state` with it back;
- computer move: the `state` that made it the computer's turn -> the `state`
  with the computer's move.

Each worker count gets fresh servers and a fresh database; CPU is counted for
the replicas, the workers and PostgreSQL's backends, per computer move. The table
goes to stdout and bench/results/<stamp>-computer.md.

    .venv/bin/python -m bench.computer [--rooms 50] [--seconds 15] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import websockets
from websockets.asyncio.client import ClientConnection

from bench.contenders import Contender
from bench.ladder import pct
from bench.servers import RESULTS, DbCpu, cpu_of, servers
from gameclient import codec

GAME = Contender(
    "game, 2 replicas, human vs computer", "game", 2, "moves", {"BOT_THINK_SECONDS": "0"}
)


@dataclass
class Meter:
    human_ms: list[float] = field(default_factory=list)
    computer_ms: list[float] = field(default_factory=list)
    computer_moves: int = 0
    errors: int = 0
    counting: bool = False


@dataclass
class Row:
    workers: int
    seconds: float
    computer_moves_per_s: float
    human_p50_ms: float
    human_p99_ms: float
    computer_p50_ms: float
    computer_p99_ms: float
    replica_us: float
    worker_us: float
    postgres_us: float
    errors: int


async def human(ws: ClientConnection, meter: Meter, stop: asyncio.Event) -> None:
    """Play X against the computer until `stop`, timing both sides' moves."""
    await ws.send(codec.encode(codec.join("human")))
    await ws.send(codec.encode(codec.bot("perfect")))
    version = -1
    sent_at: float | None = None  # our move or rematch, waiting for its state
    computer_due: float | None = None  # when the computer's turn began
    async for frame in ws:
        now = time.perf_counter()
        message = codec.decode(frame)
        if codec.kind(message) == "error":
            meter.errors += meter.counting
            sent_at = None
            await ws.send(codec.encode(codec.sync()))
            continue
        if codec.kind(message) != "state" or message["version"] <= version:
            continue
        version = message["version"]
        players = message["players"]
        if players["O"] is None or not players["O"].get("bot"):
            continue  # the computer has not taken its seat yet
        if sent_at is not None:
            if meter.counting:
                meter.human_ms.append((now - sent_at) * 1000)
            sent_at = None
        if computer_due is not None and message["turn"] != "O":
            if meter.counting:
                meter.computer_ms.append((now - computer_due) * 1000)
                meter.computer_moves += 1
            computer_due = None
        if stop.is_set():
            return
        if message["status"] in codec.FINISHED:
            sent_at = now
            await ws.send(codec.encode(codec.rematch()))
        elif message["status"] == "playing":
            if message["turn"] == "X":
                cell = message["board"].index(None)
                sent_at = now
                await ws.send(codec.encode(codec.move(cell, version)))
            else:
                computer_due = now


async def run(workers: int, args: argparse.Namespace, log_dir: Path) -> Row:
    worker_pids: list[int] = []
    with servers(GAME, log_dir, workers=workers, worker_pids=worker_pids) as procs:
        ports, pids = [p for p, _ in procs], [pid for _, pid in procs]
        db = DbCpu(pids)
        meter = Meter()
        stop = asyncio.Event()
        sockets = [
            await websockets.connect(
                f"ws://127.0.0.1:{ports[r % len(ports)]}/ws/game/c{uuid.uuid4().hex[:10]}",
                compression=None,
                proxy=None,
                ping_interval=None,
                close_timeout=2,
            )
            for r in range(args.rooms)
        ]
        players = [asyncio.create_task(human(ws, meter, stop)) for ws in sockets]
        try:
            await asyncio.sleep(args.warmup)
            meter.counting = True
            db0, replicas0, workers0 = db.sample(), cpu_of(pids), cpu_of(worker_pids)
            started = time.perf_counter()
            await asyncio.sleep(args.seconds)
            meter.counting = False
            seconds = time.perf_counter() - started
            replicas, fleet = cpu_of(pids) - replicas0, cpu_of(worker_pids) - workers0
            postgres = DbCpu.spent(db0, db.sample())
        finally:
            stop.set()
            for task in players:
                task.cancel()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in sockets)), 10)
    moves = meter.computer_moves or 1
    return Row(
        workers=workers,
        seconds=seconds,
        computer_moves_per_s=meter.computer_moves / seconds,
        human_p50_ms=pct(meter.human_ms, 0.5) / 1000,
        human_p99_ms=pct(meter.human_ms, 0.99) / 1000,
        computer_p50_ms=pct(meter.computer_ms, 0.5) / 1000,
        computer_p99_ms=pct(meter.computer_ms, 0.99) / 1000,
        replica_us=replicas / moves * 1e6,
        worker_us=fleet / moves * 1e6,
        postgres_us=postgres / moves * 1e6,
        errors=meter.errors,
    )


def table(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [
        f"human vs computer: {args.rooms} rooms on 2 replicas, humans move at once,"
        f" BOT_THINK_SECONDS=0, {args.seconds:g} s per worker count; 2 cores shared",
        "",
        "| job workers | computer moves/s | computer move p50 / p99 ms"
        " | human move p50 / p99 ms | replica us | worker us | PostgreSQL us | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.workers} | {r.computer_moves_per_s:,.0f}"
            f" | {r.computer_p50_ms:,.0f} / {r.computer_p99_ms:,.0f}"
            f" | {r.human_p50_ms:,.0f} / {r.human_p99_ms:,.0f}"
            f" | {r.replica_us:,.0f} | {r.worker_us:,.0f} | {r.postgres_us:,.0f} | {r.errors} |"
        )
    lines += ["", "CPU columns: microseconds per computer move (a human move rides along)."]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument(
        "--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4]
    )
    args = parser.parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = RESULTS / "logs" / f"{stamp}-computer"
    log_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for workers in args.workers:
        row = await run(workers, args, log_dir)
        print(row, flush=True)
        rows.append(row)
    text = table(rows, args)
    print("\n" + text)
    (RESULTS / f"{stamp}-computer.md").write_text(text + "\n")
    print(f"\nwritten: bench/results/{stamp}-computer.md")


if __name__ == "__main__":
    import uvloop

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1:] * 2)
    uvloop.run(main())
