"""`make bench`: fan-out over persistent connections, every contender in one run.

R rooms x M members spread over the contender's replicas; a paced sender offers
a rate of deliveries (sends/s x M); every delivery is counted and timed in this
one client process (uvloop, cheap parsing). Each contender climbs a ladder of
rates until delivery falls below 100% or p99 exceeds 50 ms.

Also measured: memory per idle WebSocket (10k sockets on one game replica) and
server CPU per delivered message. Results: a table on stdout, and
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
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
import websockets
from websockets.asyncio.client import ClientConnection

from deploy.fleet import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PY = sys.executable
RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
POSTGRES = os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")
P99_LIMIT_MS = 50.0


@dataclass
class Contender:
    name: str
    app: str  # "game" or an ASGI path
    replicas: int
    mode: str  # "moves", "data" (game relay), "message" (tutorial relay)
    env: dict[str, str] = field(default_factory=dict)
    scale: float = 1.0  # the ladder's rates times this (the database-bound game path starts lower)


CONTENDERS = [
    Contender("game moves (PostgreSQL + our layer)", "game", 2, "moves", scale=0.25),
    Contender("game relay {data} (our layer)", "game", 2, "data"),
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


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not up")
        time.sleep(0.1)


@contextmanager
def database() -> Iterator[str]:
    name = f"tictac_bench_{uuid.uuid4().hex[:8]}"
    subprocess.run(["psql", POSTGRES + "/postgres", "-qc", f"CREATE DATABASE {name}"], check=True)
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        subprocess.run(
            ["psql", POSTGRES + "/postgres", "-qc", f"DROP DATABASE {name} WITH (FORCE)"],
            check=False,
        )


@contextmanager
def servers(contender: Contender, log_dir: Path) -> Iterator[list[tuple[int, int]]]:
    """Start the contender's replicas; yield (port, pid) for each."""
    with database() as db_url:
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
        procs = []
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
                log = open(log_dir / f"{contender.app.replace(':', '_')}-{i}.log", "ab")  # noqa: SIM115
                proc = subprocess.Popen(
                    cmd,
                    cwd=ROOT,
                    env={**env, "PORT": str(port), "REPLICA_NAME": f"bench-{i}"},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                procs.append((port, proc))
            for port, _ in procs:
                wait_http(f"http://127.0.0.1:{port}/healthz")
            yield [(port, proc.pid) for port, proc in procs]
        finally:
            for _, proc in procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
            for _, proc in procs:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


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
        self.sent_at: dict[int, float] = {}  # version an action will produce -> send time
        self.by_mark: dict[str, ClientConnection] = {}  # who holds X and O (from `joined`)


class Meter:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.expected = 0
        self.errors = 0
        self.codes: Counter[str] = Counter()

    def reset(self) -> None:
        self.latencies = []
        self.expected = 0
        self.errors = 0
        self.codes = Counter()


async def reader(ws: ClientConnection, room: Room, meter: Meter, mode: str, player: bool) -> None:
    """Count and time every delivery; keep parsing to a minimum."""
    last = -1
    async for frame in ws:
        now = time.perf_counter()
        text = frame if isinstance(frame, str) else frame.decode()
        if mode == "moves":
            if not text.startswith('{"type":"state"'):
                if text.startswith('{"type":"joined"'):
                    room.by_mark[json.loads(text)["mark"]] = ws
                if '"error"' in text:
                    # A refused action (the client's view of the turn was behind) makes
                    # no state: not a lost delivery. Counted and shown as errors.
                    meter.errors += 1
                    meter.codes[json.loads(text)["code"]] += 1
                    meter.expected -= len(room.members)
                    room.busy = False
                continue
            state = json.loads(text)
            version = state["version"]
            if version > last:
                last = version
                sent = room.sent_at.get(version)
                if sent is not None:
                    meter.latencies.append(now - sent)
            if player and version >= room.version:
                room.version, room.status, room.turn = version, state["status"], state["turn"]
                if state["status"] == "playing" or state["rematch"] == []:
                    room.busy = False
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
    ports: list[int], rooms: int, members: int, mode: str, meter: Meter
) -> tuple[list[Room], list[asyncio.Task[None]]]:
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
            readers.append(asyncio.create_task(reader(ws, room, meter, mode, m < 2)))
    if mode == "moves":
        for room in all_rooms:
            await room.members[0].send('{"type":"join","name":"x"}')
            await room.members[1].send('{"type":"join","name":"o"}')
        deadline = time.monotonic() + 30
        while any(room.status != "playing" or len(room.by_mark) < 2 for room in all_rooms):
            if time.monotonic() > deadline:
                raise RuntimeError("rooms never started")
            await asyncio.sleep(0.05)
    return all_rooms, readers


@dataclass
class Step:
    offered: float  # deliveries/s asked for
    sent_rate: float  # deliveries/s actually offered
    delivered: float  # fraction
    rate: float  # deliveries/s received
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu_s: float
    client_cpu_s: float
    server_us_per_delivery: float


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


async def run_step(
    rooms: list[Room], meter: Meter, mode: str, rate: float, seconds: float, pids: list[int]
) -> Step:
    members = len(rooms[0].members)
    sends_per_s = rate / members
    meter.reset()
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
    got = len(meter.latencies)
    server_cpu = cpu1 - cpu0
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
    )


async def sweep(contender: Contender, args: argparse.Namespace, log_dir: Path) -> list[Step]:
    steps: list[Step] = []
    with servers(contender, log_dir) as procs:
        ports, pids = [p for p, _ in procs], [pid for _, pid in procs]
        meter = Meter()
        rooms, readers = await open_rooms(ports, args.rooms, args.members, contender.mode, meter)
        try:
            rates = [rate * contender.scale for rate in args.rates]
            await run_step(rooms, meter, contender.mode, rates[0] / 2, 1.0, pids)  # warm-up
            for rate in rates:
                step = await run_step(rooms, meter, contender.mode, rate, args.seconds, pids)
                steps.append(step)
                print(
                    f"  {contender.name[:44]:44} offered {rate:7.0f}/s  sent {step.sent_rate:7.0f}/s"
                    f"  delivered {step.delivered * 100:6.2f}%  p50 {step.p50_ms:7.1f} ms"
                    f"  p99 {step.p99_ms:8.1f} ms  server {step.server_us_per_delivery:6.0f} us/msg"
                    f"  client cpu {step.client_cpu_s / args.seconds * 100:4.0f}%  errors {step.errors}",
                    flush=True,
                )
                if not ok(step):
                    break
        finally:
            for task in readers:
                task.cancel()
            # An overloaded server may take long to answer a close: do not wait on each.
            sockets = [ws for room in rooms for ws in room.members]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in sockets)), 10)
    return steps


def ok(step: Step) -> bool:
    return (
        step.delivered >= 0.9999
        and step.p99_ms <= P99_LIMIT_MS
        and step.sent_rate >= 0.9 * step.offered
    )


def best(steps: list[Step]) -> Step | None:
    good = [s for s in steps if ok(s)]
    return max(good, key=lambda s: s.rate) if good else None


async def idle_memory(args: argparse.Namespace, log_dir: Path) -> dict[str, float]:
    """RSS growth of one game replica holding N idle sockets (one room each)."""
    contender = Contender("game", "game", 1, "moves")
    with servers(contender, log_dir) as procs:
        port, pid = procs[0]
        proc = psutil.Process(pid)
        conns = []
        for _ in range(200):  # warm the allocator and the caches first
            conns.append(await _idle(port))
        await asyncio.sleep(1)
        before = proc.memory_info().rss
        for i in range(args.idle):
            conns.append(await _idle(port))
            if i % 1000 == 999:
                print(f"  idle sockets: {i + 1}", flush=True)
        await asyncio.sleep(2)
        after = proc.memory_info().rss
        for ws in conns:
            await ws.close()
    per = (after - before) / args.idle
    return {
        "sockets": args.idle,
        "rss_before_mb": before / 2**20,
        "rss_after_mb": after / 2**20,
        "kb_per_socket": per / 1024,
    }


async def _idle(port: int) -> ClientConnection:
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/ws/game/i{uuid.uuid4().hex[:12]}",
        compression=None,
        proxy=None,
        ping_interval=None,
    )
    await ws.recv()
    await ws.recv()
    return ws


def report(
    results: dict[str, list[Step]], memory: dict[str, float] | None, args: argparse.Namespace
) -> str:
    pubsub = best(results.get("tutorial relay, channels_redis PubSub", []))
    raw = best(results.get("raw ASGI broadcast, no Channels (1 process)", []))
    lines = [
        f"fan-out: {args.rooms} rooms x {args.members} members, {args.seconds:g} s per step,"
        f" limit p99 <= {P99_LIMIT_MS:g} ms and 100% delivered; {os.cpu_count()} cores shared with the client",
        "",
        "| contender | max loss-free deliveries/s | p50 ms | p99 ms | server us/delivery | x PubSub | x raw |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, steps in results.items():
        b = best(steps)
        if b is None:
            lines.append(f"| {name} | none at the lowest rate tried | | | | | |")
            continue
        vs_pubsub = f"{b.rate / pubsub.rate:.2f}" if pubsub else "-"
        vs_raw = f"{b.rate / raw.rate:.2f}" if raw else "-"
        lines.append(
            f"| {name} | {b.rate:,.0f} | {b.p50_ms:.1f} | {b.p99_ms:.1f} |"
            f" {b.server_us_per_delivery:.0f} | {vs_pubsub} | {vs_raw} |"
        )
    if memory:
        lines += [
            "",
            f"idle sockets on one game replica: {memory['sockets']:.0f} sockets, RSS"
            f" {memory['rss_before_mb']:.0f} -> {memory['rss_after_mb']:.0f} MiB,"
            f" {memory['kb_per_socket']:.1f} KiB per socket",
        ]
    return "\n".join(lines)


def plot(results: dict[str, list[Step]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for name, steps in results.items():
        ax.plot(
            [s.offered for s in steps], [min(s.p99_ms, 5000) for s in steps], marker="o", label=name
        )
    ax.axhline(P99_LIMIT_MS, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered deliveries/s")
    ax.set_ylabel("p99 latency, ms (capped at 5 s)")
    ax.set_title("Fan-out p99 vs offered rate")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")],
                        default=[1000, 2000, 3000, 4000, 6000, 8000, 12000, 16000, 24000])  # fmt: skip
    parser.add_argument("--only", default="", help="comma-separated substrings of contender names")
    parser.add_argument(
        "--idle", type=int, default=10000, help="idle sockets for the memory probe (0: skip)"
    )
    args = parser.parse_args()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = RESULTS / "logs" / stamp
    log_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[Step]] = {}
    wanted = [w for w in args.only.split(",") if w]
    for contender in CONTENDERS:
        if wanted and not any(w in contender.name for w in wanted):
            continue
        print(f"{contender.name}:", flush=True)
        results[contender.name] = await sweep(contender, args, log_dir)
    memory = await idle_memory(args, log_dir) if args.idle else None
    text = report(results, memory, args)
    print("\n" + text)
    (RESULTS / f"{stamp}.md").write_text(text + "\n")
    (RESULTS / f"{stamp}.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "results": {k: [asdict(s) for s in v] for k, v in results.items()},
                "memory": memory,
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
