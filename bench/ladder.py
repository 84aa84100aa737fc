"""Climbing a ladder of offered rates on one contender's servers (`python -m bench.fanout`).

`run_step` offers one rate for a while and measures it (`Step`); `sweep` starts the
contender's servers once and climbs each of its ladders until a rung fails `ok`:
100% delivered, p99 <= 50 ms and at least 90% of the rate offered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.contenders import Contender
from bench.rooms import Meter, Room, act, open_rooms, quiesce
from bench.servers import DbCpu, cpu_of, servers

P99_LIMIT_MS = 50.0


@dataclass
class Step:
    offered: float  # deliveries/s asked for
    sent_rate: float  # deliveries/s actually offered
    delivered: float  # fraction
    rate: float  # deliveries/s received
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu_s: float  # the replicas (and their children)
    client_cpu_s: float
    server_us_per_delivery: float
    # the move ladder only: actions (moves; one in six a rematch, two requests) whose
    # state reached a player, and replica / PostgreSQL backend CPU per action
    moves: int = 0
    moves_per_s: float = 0.0
    server_us_per_move: float | None = None
    db_cpu_s: float | None = None  # the game only: PostgreSQL backends of its database
    db_us_per_move: float | None = None
    error_codes: dict[str, int] = field(default_factory=dict)
    closed: int = 0  # member connections the server had closed by the step's end


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("inf")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run_step(
    rooms: list[Room],
    meter: Meter,
    mode: str,
    rate: float,
    seconds: float,
    pids: list[int],
    db: DbCpu | None = None,
) -> Step:
    members = len(rooms[0].members)
    sends_per_s = rate / members
    meter.reset(mode)
    db0 = db.sample() if db else {}
    cpu0, ru0 = cpu_of(pids), resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    sent = 0
    i = 0
    tick = 0.005
    while (elapsed := time.perf_counter() - start) < seconds:
        due = int(elapsed * sends_per_s) - sent
        tries = 0
        while due > 0 and tries < len(rooms):
            room = rooms[i % len(rooms)]
            i += 1
            tries += 1
            if await act(room, meter, mode, members):
                sent += 1
                due -= 1
                tries = 0
        await asyncio.sleep(tick)
    duration = time.perf_counter() - start
    await asyncio.sleep(1.0)  # stragglers count, late
    cpu1, ru1 = cpu_of(pids), resource.getrusage(resource.RUSAGE_SELF)
    db_cpu = DbCpu.spent(db0, db.sample()) if db else None
    got = len(meter.latencies)
    server_cpu = cpu1 - cpu0
    moves = meter.moves

    def per_move(cpu: float | None) -> float | None:
        if mode != "moves" or cpu is None:
            return None
        return cpu / moves * 1e6 if moves else float("inf")

    return Step(
        offered=rate,
        sent_rate=meter.expected / duration,
        delivered=got / meter.expected if meter.expected else 0.0,
        rate=got / duration,
        p50_ms=pct(meter.latencies, 0.5),
        p99_ms=pct(meter.latencies, 0.99),
        errors=meter.errors,
        server_cpu_s=server_cpu,
        client_cpu_s=(ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
        server_us_per_delivery=server_cpu / got * 1e6 if got else float("inf"),
        moves=moves,
        moves_per_s=moves / duration,
        server_us_per_move=per_move(server_cpu),
        db_cpu_s=db_cpu,
        db_us_per_move=per_move(db_cpu),
        error_codes=dict(meter.codes),
        closed=meter.closed,
    )


def step_line(row: str, step: Step, seconds: float) -> str:
    line = (
        f"  {row[:44]:44} offered {step.offered:7.0f}/s  sent {step.sent_rate:7.0f}/s"
        f"  delivered {step.delivered * 100:6.2f}%  p50 {step.p50_ms:7.1f} ms"
        f"  p99 {step.p99_ms:8.1f} ms  server {step.server_us_per_delivery:6.0f} us/msg"
        f"  client cpu {step.client_cpu_s / seconds * 100:4.0f}%  errors {step.errors}"
    )
    if step.error_codes:
        line += " " + ",".join(f"{code}={n}" for code, n in sorted(step.error_codes.items()))
    if step.closed:
        line += f"  CLOSED sockets {step.closed}"
    if step.server_us_per_move is not None:
        line += f"  moves {step.moves_per_s:5.0f}/s  server {step.server_us_per_move:6.0f} us/move"
        if step.db_us_per_move is not None:
            line += f"  PostgreSQL {step.db_us_per_move:6.0f} us/move"
    return line


async def sweep(
    contender: Contender, ladders: list[str], args: argparse.Namespace, log_dir: Path
) -> dict[str, list[Step]]:
    """Start the contender's servers once and climb each ladder on them, in turn."""
    results: dict[str, list[Step]] = {}
    with servers(contender, log_dir) as procs:
        ports, pids = [p for p, _ in procs], [pid for _, pid in procs]
        game = contender.app == "game"
        db = DbCpu(pids) if game else None
        meter = Meter()
        rooms, readers = await open_rooms(ports, args.rooms, args.members, game, meter)
        try:
            for n, mode in enumerate(ladders):
                if n:
                    await quiesce(rooms)
                row = contender.row(mode)
                steps = results[row] = []
                await run_step(rooms, meter, mode, args.rates[0] / 2, 1.0, pids, db)  # warm-up
                for rate in args.rates:
                    step = await run_step(rooms, meter, mode, rate, args.seconds, pids, db)
                    steps.append(step)
                    print(step_line(row, step, args.seconds), flush=True)
                    if not ok(step):
                        break
        finally:
            for task in readers:
                task.cancel()
            # An overloaded server may take long to answer a close: do not wait on each.
            sockets = [ws for room in rooms for ws in room.members]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in sockets)), 10)
    return results


def ok(step: Step) -> bool:
    return (
        step.delivered >= 0.9999
        and step.p99_ms <= P99_LIMIT_MS
        and step.sent_rate >= 0.9 * step.offered
    )


def best(steps: list[Step]) -> Step | None:
    good = [s for s in steps if ok(s)]
    return max(good, key=lambda s: s.rate) if good else None


def topped(steps: list[Step], args: argparse.Namespace) -> bool:
    """Every rate tried was loss-free: the ceiling lies above the ladder."""
    return len(steps) == len(args.rates) and all(ok(s) for s in steps)
