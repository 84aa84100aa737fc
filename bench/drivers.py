"""`python -m bench.drivers`: the async PostgreSQL drivers for the move path, side by side.

The replicas' hot statement is one compare-and-swap `UPDATE ... RETURNING` in
autocommit. This runs that statement N times through psycopg 3's
`AsyncConnection` from a `psycopg_pool` pool (what game/pgstore.py uses) and
through asyncpg's pool, and through the replicas' `Batcher` (game/pgbatch.py: what
waits while both connections are busy goes out as one pipeline and one
transaction), alternating the contenders twice, at 1 and 8 statements in flight,
and prints statements per second and CPU per statement of this process and of the
PostgreSQL server (all its processes; run it on an otherwise idle machine). Needs
PostgreSQL (BENCH_POSTGRES, default postgres://postgres@127.0.0.1:5432) and
requirements/bench.txt (asyncpg).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import uvloop
from psycopg_pool import AsyncConnectionPool

from game.pgbatch import Batcher

POSTGRES = os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")
TABLE = f"bench_drivers_{uuid.uuid4().hex[:8]}"
UPDATE = (
    "UPDATE {t} SET version = version + 1, board = {b} WHERE code = {c} AND version >= {v}"
    " RETURNING code, version, board, x_name, o_name"
)


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def server_cpu() -> float:
    """CPU seconds of every PostgreSQL process on this machine, and of those that ended
    (the postmaster's reaped children: backends of closed connections)."""
    ticks = 0
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "comm").read_text().startswith("postgres"):
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                ticks += sum(int(f) for f in fields[11:15])
        except OSError:
            continue  # gone meanwhile
    return ticks / os.sysconf("SC_CLK_TCK")


async def psycopg_run(dsn: str, total: int, inflight: int) -> None:
    pool = AsyncConnectionPool(
        dsn, min_size=inflight, max_size=inflight, open=False, kwargs={"autocommit": True}
    )
    await pool.open(wait=True)
    query = UPDATE.format(t=TABLE, b="%(b)s", c="%(c)s", v="%(v)s")

    async def worker(i: int) -> None:
        for _ in range(total // inflight):
            async with pool.connection() as conn:
                cursor = await conn.execute(query, {"b": "X........", "c": f"r{i}", "v": 0})
                await cursor.fetchone()

    await asyncio.gather(*(worker(i) for i in range(inflight)))
    await pool.close()


async def asyncpg_run(dsn: str, total: int, inflight: int) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=inflight, max_size=inflight)
    query = UPDATE.format(t=TABLE, b="$1", c="$2", v="$3")

    async def worker(i: int) -> None:
        for _ in range(total // inflight):
            async with pool.acquire() as conn:
                await conn.fetchrow(query, "X........", f"r{i}", 0)

    await asyncio.gather(*(worker(i) for i in range(inflight)))
    await pool.close()


async def batcher_run(dsn: str, total: int, inflight: int) -> None:
    pool = AsyncConnectionPool(dsn, min_size=2, max_size=2, open=False, kwargs={"autocommit": True})
    await pool.open(wait=True)
    batcher = Batcher(pool, senders=2)
    query = UPDATE.format(t=TABLE, b="%(b)s", c="%(c)s", v="%(v)s")

    async def worker(i: int) -> None:
        for _ in range(total // inflight):
            await batcher.run(f"r{i}", query, {"b": "X........", "c": f"r{i}", "v": 0})

    await asyncio.gather(*(worker(i) for i in range(inflight)))
    await pool.close()
    BATCHES.append(batcher.statements / batcher.batches)


BATCHES: list[float] = []  # statements per pipeline, for each Batcher run

CONTENDERS: dict[str, Callable[[str, int, int], Awaitable[None]]] = {
    "psycopg 3 AsyncConnection + psycopg_pool": psycopg_run,
    "asyncpg + its pool": asyncpg_run,
    "psycopg 3, game.pgstore.Batcher on 2 connections": batcher_run,
}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--statements", type=int, default=3000)
    args = parser.parse_args()
    dsn = f"{POSTGRES}/postgres"
    setup = await asyncpg.connect(dsn)
    await setup.execute(
        f"CREATE TABLE {TABLE} (code text PRIMARY KEY, version int, board text,"
        f" x_name text, o_name text);"
        f" INSERT INTO {TABLE} SELECT 'r' || i, 0, '.........', 'ana', 'bo'"
        f" FROM generate_series(0, 63) i"
    )
    rows: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    try:
        for inflight in (1, 8):
            for _ in range(2):  # alternate, twice: the machine is shared and noisy
                for name, run in CONTENDERS.items():
                    started, cpu0, db0 = time.perf_counter(), cpu(), server_cpu()
                    await run(dsn, args.statements, inflight)
                    wall, used = time.perf_counter() - started, cpu() - cpu0
                    db = server_cpu() - db0
                    rows.setdefault((name, inflight), []).append(
                        (
                            args.statements / wall,
                            used / args.statements * 1e6,
                            db / args.statements * 1e6,
                        )
                    )
    finally:
        await setup.execute(f"DROP TABLE {TABLE}")
        await setup.close()
    print(
        f"{args.statements} autocommit UPDATE ... RETURNING per run, two runs each, alternating\n"
    )
    print(
        "| driver | in flight | statements/s | client CPU us/statement"
        " | PostgreSQL CPU us/statement |"
    )
    print("|---|---|---|---|---|")
    for (name, inflight), runs in rows.items():
        rate, per, db = (sum(run[k] for run in runs) / len(runs) for k in range(3))
        print(f"| {name} | {inflight} | {rate:,.0f} | {per:.0f} | {db:.0f} |")
    sizes = ", ".join(f"{size:.1f}" for size in BATCHES)
    print(f"\nBatcher: statements per pipeline, run by run: {sizes}")


if __name__ == "__main__":
    uvloop.run(main())
