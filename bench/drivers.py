"""`python -m bench.drivers`: the async PostgreSQL drivers for the move path, side by side.

The replicas' hot statement is one compare-and-swap `UPDATE ... RETURNING` in
autocommit. This runs that statement N times through psycopg 3's
`AsyncConnection` from a `psycopg_pool` pool (what game/pgstore.py uses) and
through asyncpg's pool, alternating the contenders twice, at 1 and 8
statements in flight, and prints statements per second and this process's
CPU per statement (the database's CPU is the same SQL either way). Needs
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

import asyncpg
import uvloop
from psycopg_pool import AsyncConnectionPool

POSTGRES = os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")
TABLE = f"bench_drivers_{uuid.uuid4().hex[:8]}"
UPDATE = (
    "UPDATE {t} SET version = version + 1, board = {b} WHERE code = {c} AND version >= {v}"
    " RETURNING code, version, board, x_name, o_name"
)


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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


CONTENDERS: dict[str, Callable[[str, int, int], Awaitable[None]]] = {
    "psycopg 3 AsyncConnection + psycopg_pool": psycopg_run,
    "asyncpg + its pool": asyncpg_run,
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
    rows: dict[tuple[str, int], list[tuple[float, float]]] = {}
    try:
        for inflight in (1, 8):
            for _ in range(2):  # alternate, twice: the machine is shared and noisy
                for name, run in CONTENDERS.items():
                    started, cpu0 = time.perf_counter(), cpu()
                    await run(dsn, args.statements, inflight)
                    wall, used = time.perf_counter() - started, cpu() - cpu0
                    rows.setdefault((name, inflight), []).append(
                        (args.statements / wall, used / args.statements * 1e6)
                    )
    finally:
        await setup.execute(f"DROP TABLE {TABLE}")
        await setup.close()
    print(
        f"{args.statements} autocommit UPDATE ... RETURNING per run, two runs each, alternating\n"
    )
    print("| driver | in flight | statements/s | client CPU us/statement |")
    print("|---|---|---|---|")
    for (name, inflight), runs in rows.items():
        rate = sum(r for r, _ in runs) / len(runs)
        per = sum(c for _, c in runs) / len(runs)
        print(f"| {name} | {inflight} | {rate:,.0f} | {per:.0f} |")


if __name__ == "__main__":
    uvloop.run(main())
