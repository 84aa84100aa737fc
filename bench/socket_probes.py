"""What holding and opening game sockets costs one replica (`python -m bench.sockets`).

- `idle_memory`: replica RSS growth per idle socket (one room each), after a warm-up;
- `connect_rate`: sockets/s and replica CPU per connect on a warmed-up replica, counted
  until the replica is quiet again (the presence broadcast each connect schedules included).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.socket_pool import Probe, cpu_seconds, progress_printer, rss, settle


@dataclass
class Idle:
    deflate_offered: bool
    sockets: int
    negotiated: str
    rss_before_mib: float
    rss_after_mib: float
    kib_per_socket: float
    failed: int


@dataclass
class Connects:
    deflate_offered: bool
    sockets: int
    concurrency: int
    seconds: float
    per_second: float
    cpu_ms_per_connect: float
    failed: int


async def idle_memory(sockets_n: int, *, deflate: bool, probe: Probe, warmup: int = 200) -> Idle:
    """RSS growth of a fresh replica per idle socket (each waited for welcome and state)."""
    with probe.replica() as (port, proc):
        async with probe.sockets(port, deflate) as pool:
            await pool.add(warmup, concurrency=probe.concurrency, within=120)
            await settle(proc)
            before = rss(proc)
            await pool.add(
                sockets_n,
                concurrency=probe.concurrency,
                within=120 + sockets_n * 0.2,
                progress=progress_printer(sockets_n, f"idle, deflate {'on' if deflate else 'off'}"),
            )
            await settle(proc)
            after = rss(proc)
            opened = len(pool.open) - warmup
            return Idle(
                deflate_offered=deflate,
                sockets=opened,
                negotiated=pool.negotiated(),
                rss_before_mib=before / 2**20,
                rss_after_mib=after / 2**20,
                kib_per_socket=(after - before) / opened / 1024,
                failed=pool.failed,
            )


async def connect_rate(
    sockets_n: int, *, deflate: bool, probe: Probe, warmup: int = 200
) -> Connects:
    """Open `sockets_n` sockets, `concurrency` in flight, on a fresh, warmed-up replica.

    CPU is counted until the replica is quiet again, so the presence broadcast each
    connect schedules is part of its cost."""
    concurrency = probe.concurrency
    with probe.replica() as (port, proc):
        async with probe.sockets(port, deflate) as warm:
            await warm.add(warmup, concurrency=concurrency, within=120)
            async with probe.sockets(port, deflate) as pool:
                await settle(proc)
                cpu0 = cpu_seconds(proc)
                seconds = await pool.add(
                    sockets_n, concurrency=concurrency, within=120 + sockets_n * 0.2
                )
                await settle(proc)
                cpu = cpu_seconds(proc) - cpu0
                opened = len(pool.open)
                return Connects(
                    deflate_offered=deflate,
                    sockets=opened,
                    concurrency=concurrency,
                    seconds=seconds,
                    per_second=opened / seconds,
                    cpu_ms_per_connect=cpu / opened * 1000,
                    failed=pool.failed,
                )
