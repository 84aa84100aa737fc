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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
import websockets
from websockets.asyncio.client import ClientConnection

from devtools.databases import throwaway_database
from devtools.processes import Child, free_port, wait_http

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PY = sys.executable
RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
POSTGRES = os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")
P99_LIMIT_MS = 50.0
MOVES_ROW = "game moves (PostgreSQL + our layer)"
RELAY_ROW = "game relay {data} (our layer)"


@dataclass
class Contender:
    name: str
    app: str  # "game" or an ASGI path
    replicas: int
    # "moves", "data" (game relay), "message" (tutorial relay), or several ladders
    # joined by "+", climbed one after the other on the same servers and rooms
    mode: str
    env: dict[str, str] = field(default_factory=dict)
    rows: dict[str, str] = field(default_factory=dict)  # result row per ladder (default: name)

    @property
    def ladders(self) -> list[str]:
        return self.mode.split("+")

    def row(self, mode: str) -> str:
        return self.rows.get(mode, self.name)


CONTENDERS = [
    Contender(
        "game, 2 replicas (PostgreSQL + our layer): both paths, one after the other",
        "game",
        2,
        "moves+data",
        rows={"moves": MOVES_ROW, "data": RELAY_ROW},
    ),
    Contender(
        "minimal relay, our layer + lean consumer loop",
        "bench.apps:relay_application",
        2,
        "message",
        {"BENCH_LAYER": "rabbitmq", "BENCH_CONSUMER": "lean"},
    ),
    Contender(
        "tutorial relay, our RabbitMQ layer",
        "bench.apps:relay_application",
        2,
        "message",
        {"BENCH_LAYER": "rabbitmq"},
    ),
    Contender(
        "tutorial relay, channels_redis core",
        "bench.apps:relay_application",
        2,
        "message",
        {"BENCH_LAYER": "redis"},
    ),
    Contender(
        "tutorial relay, channels_redis PubSub",
        "bench.apps:relay_application",
        2,
        "message",
        {"BENCH_LAYER": "redis-pubsub"},
    ),
    Contender(
        "tutorial relay, in-memory layer (1 process)",
        "bench.apps:relay_application",
        1,
        "message",
        {"BENCH_LAYER": "memory"},
    ),
    Contender(
        "raw ASGI broadcast, no Channels (1 process)", "bench.apps:raw_application", 1, "message"
    ),
]


@contextmanager
def servers(
    contender: Contender, log_dir: Path, *, workers: int = 1, worker_pids: list[int] | None = None
) -> Iterator[list[tuple[int, int]]]:
    """Start the contender's replicas (and, for the game, `workers` job workers, whose
    pids go into `worker_pids`); yield (port, pid) for each replica."""
    with throwaway_database(POSTGRES + "/postgres", prefix="tictac_bench") as db_url:
        env = {
            **os.environ,
            **contender.env,
            "DATABASE_URL": db_url,
            "RABBITMQ_URL": RABBITMQ_URL,
            "DJANGO_SETTINGS_MODULE": "config.settings.production"
            if contender.app == "game"
            else "bench.settings",
            "SECRET_KEY": "bench",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "RATE_LIMIT_PER_SECOND": "1000000",
            "RATE_LIMIT_CLOSE_PER_SECOND": "2000000",
            "LOG_LEVEL": "WARNING",
            "DRAIN_READINESS_DELAY_SECONDS": "0",
            "DRAIN_WINDOW_SECONDS": "0.5",
            "GRACEFUL_SHUTDOWN_SECONDS": "3",
        }
        if contender.app == "game":
            subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        replicas: list[tuple[int, Child]] = []
        fleet: list[Child] = []
        name = contender.app.replace(":", "_")
        try:
            for i in range(contender.replicas):
                port = free_port()
                if contender.app == "game":
                    cmd = [PY, "-m", "deploy.server"]
                else:
                    cmd = [
                        PY, "-m", "uvicorn", contender.app, "--port", str(port),
                        "--loop", "uvloop", "--http", "httptools", "--ws", "websockets-sansio",
                        "--no-access-log", "--lifespan", "off", "--log-level", "warning",
                    ]  # fmt: skip
                replica = Child(f"{name}-{i}", log_dir / f"{name}-{i}.log")
                replica.spawn(cmd, {**env, "PORT": str(port), "REPLICA_NAME": f"bench-{i}"})
                replicas.append((port, replica))
            if contender.app == "game":
                # The job fleet, as production runs it: finished games are counted (and the
                # jobs queue does not grow for the whole run). Its CPU is not the replicas'.
                for w in range(workers):
                    cmd = [PY, "manage.py", "run_workers", "--concurrency", "4"]
                    cmd += ["--metrics-port", str(free_port())]
                    worker = Child(f"worker-{w}", log_dir / f"worker-{w}.log").spawn(cmd, env)
                    fleet.append(worker)
                    if worker_pids is not None and worker.pid is not None:
                        worker_pids.append(worker.pid)
            for port, replica in replicas:
                wait_http(f"http://127.0.0.1:{port}/healthz", child=replica)
            yield [(port, replica.pid) for port, replica in replicas if replica.pid is not None]
        finally:
            children = [*fleet, *(replica for _, replica in replicas)]
            for child in children:  # all at once, then wait for each
                child.signal_group(signal.SIGTERM)
            for child in children:
                child.stop(15)


# --- the client -----------------------------------------------------------------------


class Room:
    """One room's members and, for the game, its script: X 0,1,2 vs O 3,4, then rematch."""

    def __init__(self, code: str, members: list[ClientConnection]) -> None:
        self.code = code
        self.members = members
        self.version = 0  # highest version the players have seen
        self.status = "waiting"
        self.turn: str | None = None
        self.opener = "X"
        self.busy = False  # an action is in flight (its state not seen yet by the players)
        self.acted_at = -1  # the version the action in flight was sent at
        self.sent_at: dict[int, float] = {}  # version an action will produce -> send time
        self.by_mark: dict[str, ClientConnection] = {}  # who holds X and O (from `joined`)


class Meter:
    def __init__(self) -> None:
        self.mode = ""  # the ladder being climbed: only its deliveries count
        self.latencies: list[float] = []
        self.expected = 0
        self.errors = 0
        self.moves = 0  # move-path actions whose new state reached a player
        self.codes: Counter[str] = Counter()
        self.closed = 0  # member connections the server closed (never reset)

    def reset(self, mode: str) -> None:
        self.mode = mode
        self.latencies = []
        self.expected = 0
        self.errors = 0
        self.moves = 0
        self.codes = Counter()


async def reader(ws: ClientConnection, room: Room, meter: Meter, player: bool) -> None:
    """Read one member's frames until the server closes it (counted: its deliveries are lost)."""
    try:
        await _read(ws, room, meter, player)
    except websockets.ConnectionClosed:
        meter.closed += 1


async def _read(ws: ClientConnection, room: Room, meter: Meter, player: bool) -> None:
    """Count and time every delivery of the current ladder; keep parsing to a minimum.

    A game connection gets both kinds of frame: `state` counts while the move ladder
    runs, relay payloads while a relay ladder runs (a straggler of the other kind
    is not a delivery of this one).
    """
    last = -1
    members = len(room.members)
    async for frame in ws:
        now = time.perf_counter()
        text = frame if isinstance(frame, str) else frame.decode()
        if text.startswith('{"type":"state"'):
            state = json.loads(text)
            version = state["version"]
            moves = meter.mode == "moves"
            if version > last:
                last = version
                sent = room.sent_at.get(version)
                if moves and sent is not None:
                    meter.latencies.append(now - sent)
            if player and version >= room.version:
                if moves and version > room.version and version in room.sent_at:
                    meter.moves += 1
                room.version, room.status, room.turn = version, state["status"], state["turn"]
                # The action in flight landed once a newer version shows it (the other
                # player's copy of the version it was sent at does not count).
                if version > room.acted_at and (
                    state["status"] == "playing" or state["rematch"] == []
                ):
                    room.busy = False
            continue
        if text.startswith('{"type":'):
            if text.startswith('{"type":"joined"'):
                room.by_mark[json.loads(text)["mark"]] = ws
            elif text.startswith('{"type":"error"'):
                meter.errors += 1
                meter.codes[json.loads(text)["code"]] += 1
                if meter.mode == "moves" and room.busy:
                    # A refused action makes no state: not a lost delivery, but counted
                    # and shown as an error (the scripted client should never see one).
                    meter.expected -= members
                    room.busy = False
            continue
        if meter.mode == "moves":
            continue
        start = text.find('"m:')
        if start < 0:
            continue
        sent = float(text[start + 3 : text.find('"', start + 3)])
        meter.latencies.append(now - sent)


SCRIPT = {"X": [0, 1, 2], "O": [3, 4, 5]}


async def act(room: Room, meter: Meter, mode: str, members: int) -> bool:
    """One paced send for this room; False if the room could not act now."""
    now = time.perf_counter()
    if mode != "moves":
        key = "data" if mode == "data" else "message"
        await room.members[0].send(f'{{"{key}":"m:{now!r}"}}')
        meter.expected += members
        return True
    if room.busy or room.status == "waiting":
        return False
    room.busy = True
    room.acted_at = room.version
    if room.status in ("won", "draw"):
        room.sent_at[room.version + 1] = now
        await room.members[0].send('{"type":"rematch"}')
        await room.members[1].send('{"type":"rematch"}')
    else:
        assert room.turn is not None
        mover = room.by_mark[room.turn]
        cell = next_cell(room)
        room.sent_at[room.version + 1] = now
        await mover.send(f'{{"type":"move","cell":{cell},"version":{room.version}}}')
    meter.expected += members
    return True


def next_cell(room: Room) -> int:
    """Games follow the script, so the cell follows from the version within the game."""
    # versions: 2 seats, then 5 moves per game and 1 new game each: (v - 2) % 6 moves played
    played = (room.version - 2) % 6
    first, second = ("X", "O") if (room.version - 2) // 6 % 2 == 0 else ("O", "X")
    mover = first if played % 2 == 0 else second
    return SCRIPT["X" if mover == first else "O"][played // 2]


async def open_rooms(
    ports: list[int], rooms: int, members: int, seat: bool, meter: Meter
) -> tuple[list[Room], list[asyncio.Task[None]]]:
    """Open the rooms; with `seat`, members 0 and 1 take X and O and the games start."""
    all_rooms, readers = [], []
    for r in range(rooms):
        code = f"b{uuid.uuid4().hex[:10]}"
        conns = []
        for m in range(members):
            port = ports[(r + m) % len(ports)]
            conns.append(
                await websockets.connect(
                    f"ws://127.0.0.1:{port}/ws/game/{code}",
                    max_size=None,
                    compression=None,
                    proxy=None,
                    ping_interval=None,
                    close_timeout=2,
                )
            )
        room = Room(code, conns)
        all_rooms.append(room)
        for m, ws in enumerate(conns):
            readers.append(asyncio.create_task(reader(ws, room, meter, m < 2)))
    if seat:
        for room in all_rooms:
            await room.members[0].send('{"type":"join","name":"x"}')
            await room.members[1].send('{"type":"join","name":"o"}')
        deadline = time.monotonic() + 30
        while any(room.status != "playing" or len(room.by_mark) < 2 for room in all_rooms):
            if time.monotonic() > deadline:
                waiting = sum(
                    room.status != "playing" or len(room.by_mark) < 2 for room in all_rooms
                )
                raise RuntimeError(
                    f"{waiting} of {rooms} rooms never started ({meter.closed} sockets closed,"
                    f" errors {dict(meter.codes)}): see the replicas' logs"
                )
            await asyncio.sleep(0.05)
    return all_rooms, readers


QUIESCE_SECONDS = 30.0


async def quiesce(rooms: list[Room]) -> None:
    """Let in-flight actions land before the next ladder (an overloaded rung leaves a backlog)."""
    deadline = time.monotonic() + QUIESCE_SECONDS
    while busy := sum(room.busy for room in rooms):
        if time.monotonic() > deadline:
            print(f"  ({busy} rooms still wait for a state after {QUIESCE_SECONDS:g} s)")
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)


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


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                times = p.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


class DbCpu:
    """CPU of the PostgreSQL backends serving the replicas' database (same host; best effort).

    Backends are found by the database name in their process title; one that
    exits during a step takes its CPU with it (rare: connections persist).
    """

    def __init__(self, pids: list[int]) -> None:
        self.tag = ""
        with contextlib.suppress(psutil.Error, KeyError, IndexError):
            url = psutil.Process(pids[0]).environ()["DATABASE_URL"]
            self.tag = " " + url.rsplit("/", 1)[-1] + " "

    def sample(self) -> dict[tuple[int, float], float]:
        cpu: dict[tuple[int, float], float] = {}
        if not self.tag:
            return cpu
        for proc in psutil.process_iter(["name", "cmdline", "create_time", "cpu_times"]):
            info = proc.info
            if info["name"] != "postgres" or not info["cmdline"] or info["cpu_times"] is None:
                continue
            if self.tag in " " + " ".join(info["cmdline"]) + " ":
                times = info["cpu_times"]
                cpu[(proc.pid, info["create_time"])] = times.user + times.system
        return cpu

    @staticmethod
    def spent(
        before: dict[tuple[int, float], float], after: dict[tuple[int, float], float]
    ) -> float:
        return sum(t - before.get(key, 0.0) for key, t in after.items())


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


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def game_lines(results: dict[str, list[Step]], args: argparse.Namespace) -> list[str]:
    """The move path against the relay path, measured on the same servers and rooms."""
    lines: list[str] = []
    moves, relay = results.get(MOVES_ROW), results.get(RELAY_ROW)
    bm = best(moves) if moves else None
    if moves and relay:
        br = best(relay)
        if br is None:
            lines.append("game path / relay path: the relay path held no rung loss-free, no ratio")
        elif bm is None:
            lines.append(
                f"game path / relay path < {args.rates[0] / br.rate:.2f} x (max loss-free"
                f" deliveries/s: the move path held not even {args.rates[0]:,.0f}; relay"
                f" {br.rate:,.0f})"
            )
        else:
            sign, note = "=", ""
            if topped(moves, args) and topped(relay, args):
                sign, note = "~", "; both passed every rung: raise --rates"
            elif topped(moves, args):
                sign, note = ">=", "; the move path passed every rung"
            elif topped(relay, args):
                sign, note = "<=", "; the relay path passed every rung"
            lines.append(
                f"game path / relay path {sign} {bm.rate / br.rate:.2f} x (max loss-free"
                f" deliveries/s: {bm.rate:,.0f} vs {br.rate:,.0f}{note})"
            )
    step = bm or (moves[0] if moves else None)
    if step is not None and step.server_us_per_move is not None:
        where = (
            f"at {step.moves_per_s:,.0f} moves/s"
            if bm
            else f"at the lowest rung ({step.moves_per_s:,.0f} moves/s, not loss-free)"
        )
        db = (
            f", PostgreSQL backends {step.db_us_per_move:,.0f} us per move"
            if step.db_us_per_move is not None
            else ""
        )
        lines.append(
            f"move path {where}: replica CPU {step.server_us_per_move:,.0f} us per move"
            f" ({step.server_us_per_delivery:,.0f} us per delivery, {args.members} deliveries"
            f" per move){db}; one move in six is a rematch (two requests)"
        )
    return ["", *lines] if lines else []


def report(results: dict[str, list[Step]], sockets: str | None, args: argparse.Namespace) -> str:
    pubsub = best(results.get("tutorial relay, channels_redis PubSub", []))
    raw = best(results.get("raw ASGI broadcast, no Channels (1 process)", []))
    lines = [
        f"fan-out: {args.rooms} rooms x {args.members} members, {args.seconds:g} s per step,"
        f" limit p99 <= {P99_LIMIT_MS:g} ms and 100% delivered; {os.cpu_count()} cores shared with the client",
        "",
        "| contender | max loss-free deliveries/s | p50 ms | p99 ms | server us/delivery"
        " | server us/move | PostgreSQL us/move | refused actions | x PubSub | x raw |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, steps in results.items():
        b = best(steps)
        if b is None:
            s = steps[0]  # the lowest rung, for its figures
            errors = s.errors
            lines.append(
                f"| {name} | none (lowest rung {s.offered:,.0f}/s: {s.delivered * 100:.2f}%"
                f" delivered, {s.sent_rate / s.offered * 100:.0f}% offered) | {s.p50_ms:.1f} |"
                f" {s.p99_ms:.1f} | {s.server_us_per_delivery:.0f} | {fmt(s.server_us_per_move)} |"
                f" {fmt(s.db_us_per_move)} | {errors} | | |"
            )
            continue
        vs_pubsub = f"{b.rate / pubsub.rate:.2f}" if pubsub else "-"
        vs_raw = f"{b.rate / raw.rate:.2f}" if raw else "-"
        errors = b.errors  # at that rung
        more = "+" if topped(steps, args) else ""
        lines.append(
            f"| {name} | {b.rate:,.0f}{more} | {b.p50_ms:.1f} | {b.p99_ms:.1f} |"
            f" {b.server_us_per_delivery:.0f} | {fmt(b.server_us_per_move)} |"
            f" {fmt(b.db_us_per_move)} | {errors} | {vs_pubsub} | {vs_raw} |"
        )
    if any(topped(steps, args) for steps in results.values()):
        lines += ["", "+: loss-free at every rate tried; the ceiling is higher."]
    lines += game_lines(results, args)
    if sockets:
        lines += ["", sockets]
    return "\n".join(lines)


def plot(results: dict[str, list[Step]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, got) = plt.subplots(1, 2, figsize=(14, 5.5))
    for name, steps in results.items():
        game = name in (MOVES_ROW, RELAY_ROW)
        style = {"marker": "o", "label": name, "linewidth": 2.5 if game else 1.2}
        offered = [s.offered for s in steps]
        lat.plot(offered, [min(s.p99_ms, 5000) for s in steps], **style)
        got.plot(offered, [max(s.rate, 1.0) for s in steps], **style)
    lat.axhline(P99_LIMIT_MS, color="grey", linestyle="--", linewidth=1)
    lat.set_ylabel("p99 latency, ms (capped at 5 s)")
    lat.set_title("Fan-out p99 vs offered rate")
    everything = [s.offered for steps in results.values() for s in steps] or [1.0]
    span = [min(everything), max(everything)]
    got.plot(span, span, color="grey", linestyle="--", linewidth=1)
    got.set_ylabel("delivered deliveries/s")
    got.set_title("Delivered vs offered deliveries/s")
    for ax in (lat, got):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("offered deliveries/s")
    lat.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def selected(contender: Contender, wanted: list[str]) -> list[str]:
    """The contender's ladders `--only` asks for: all if its name matches, else those whose row does."""
    if not wanted or any(w in contender.name for w in wanted):
        return contender.ladders
    return [m for m in contender.ladders if any(w in contender.row(m) for w in wanted)]


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
        from bench import sockets  # it builds on this module's servers()

        probe = await sockets.measure(sockets_n=args.idle, log_dir=log_dir)
    text = report(results, sockets.table(probe) if probe else None, args)
    print("\n" + text)
    (RESULTS / f"{stamp}.md").write_text(text + "\n")
    (RESULTS / f"{stamp}.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "results": {k: [asdict(s) for s in v] for k, v in results.items()},
                "sockets": asdict(probe) if probe else None,
            },
            indent=1,
        )
    )
    plot(results, RESULTS / f"{stamp}.png")
    print(f"\nwritten: bench/results/{stamp}.md .json .png")


if __name__ == "__main__":
    import uvloop

    # SIGTERM (a timeout, Ctrl-C's cousin) unwinds like Ctrl-C, so servers are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1:] * 2)
    uvloop.run(main())
