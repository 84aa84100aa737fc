"""SIGTERM to a worker that holds jobs (workers/runtime.py, `run_workers`).

The runtime's promise: on SIGTERM a worker takes no new job, finishes the ones in hand
(up to `--grace` seconds), closes and exits 0; a job still unfinished when the grace
runs out stays unacknowledged, so RabbitMQ hands it back. Either way every job's effect
happens exactly once: the leaderboard totals come out exact.

The jobs are held in hand deterministically: the test locks the leaderboard table
before the games end, so every `game.finished` job a worker takes stops inside its
statement (tests/workers/test_workers.py's SIGKILL test uses the same lock). A real
`run_workers` process (tests/support/workers.py) gets the signal; a second worker
started afterwards does whatever the first one left. Module-wide: a throwaway PostgreSQL
database and a throwaway RabbitMQ vhost; tables truncated and queues purged per test.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from game import rules
from tests.support.timing import budget
from tests.support.workers import (
    DEAD_QUEUE,
    JOBS_QUEUE,
    Worker,
    django_env,
    expected_totals,
    query,
    run_play_script,
    script_result,
)

pytestmark = [pytest.mark.e2e, pytest.mark.fleet]

GAMES = 20
CONCURRENCY = 4  # the worker's prefetch: the jobs it holds once the table is locked
PLAYERS = [f"p{i}" for i in range(6)]
# An upper bound for any awaited event: a guard against a hang, not a limit.
WITHIN = budget(60.0)


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture
def start_worker(
    clean: None, database_url: str, rabbitmq_url: str, tmp_path: Path
) -> Iterator[Callable[..., Worker]]:
    """start(name, grace) -> a consuming worker; any still running is stopped at teardown."""
    started: list[Worker] = []

    def start(name: str, *, grace: float) -> Worker:
        env = django_env(database_url, rabbitmq_url, JOB_RETRY_DELAYS="0.2,0.4")
        worker = Worker(
            name=name,
            env=env,
            log_dir=tmp_path / "workers",
            concurrency=CONCURRENCY,
            grace=grace,
        )
        started.append(worker)
        worker.start().wait_consuming(WITHIN)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()
            print(f"--- {worker.name} ({worker.log_path}):\n{worker.log()[-3000:]}")


@pytest.fixture
def leaderboard_locked(clean: None, database_url: str) -> Iterator[Callable[[], None]]:
    """The leaderboard table locked (EXCLUSIVE: reads pass, every count waits) until
    the test calls release(); released at teardown in any case."""
    conn = psycopg.connect(database_url.replace("postgres://", "postgresql://", 1))
    conn.execute("LOCK TABLE game_leaderboardentry IN EXCLUSIVE MODE")
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            conn.rollback()

    try:
        yield release
    finally:
        release()
        conn.close()


# --- helpers --------------------------------------------------------------------------


def plan_games(count: int) -> list[dict[str, Any]]:
    """`count` games between PLAYERS, each played to its end (wins and draws)."""
    plan = []
    for i in range(count):
        x, o = PLAYERS[i % len(PLAYERS)], PLAYERS[(i + 1 + i // len(PLAYERS)) % len(PLAYERS)]
        order = [4, 0, 8, 2, 1, 7, 6, 3, 5] if i % 2 else [0, 3, 1, 4, 2, 5, 6, 7, 8]
        board: rules.Board = rules.EMPTY_BOARD
        cells: list[int] = []
        mark: rules.Mark = "X"
        for cell in order:
            if rules.outcome(board).status != "playing":
                break
            board = rules.place(board, cell, mark)
            cells.append(cell)
            mark = rules.other(mark)
        winner = rules.outcome(board).winner
        plan.append({"room": f"sigterm-{i:02d}", "x": x, "o": o, "cells": cells, "winner": winner})
    assert {g["winner"] for g in plan} == {"X", None}, "both wins and draws"
    return plan


def totals(database_url: str) -> dict[str, tuple[int, int, int]]:
    rows = query(database_url, "SELECT name, wins, losses, draws FROM game_leaderboardentry")
    return {str(name): (int(w), int(lo), int(d)) for name, w, lo, d in rows}


def counted(database_url: str) -> tuple[int, int]:
    """(counted, all) game results."""
    ((done, total),) = query(
        database_url, "SELECT count(*) FILTER (WHERE counted), count(*) FROM game_gameresult"
    )
    return int(done), int(total)


def ready(rabbitmq_url: str, name: str = JOBS_QUEUE) -> int:
    """Messages ready (not held by any consumer) in a queue of the vhost."""
    import aio_pika

    async def count() -> int:
        connection = await aio_pika.connect(rabbitmq_url, timeout=10)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(name, passive=True)
            return int(queue.declaration_result.message_count or 0)

    return asyncio.run(count())


def wait_for(check: Callable[[], Any], what: str, within: float = WITHIN) -> Any:
    deadline = time.monotonic() + within
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {within}s")
        time.sleep(0.05)


def jobs(worker: Worker, outcome: str) -> int:
    return int(worker.metric("tictac_jobs_total", kind="game.finished", outcome=outcome))


def play_all(
    plan: list[dict[str, Any]], database_url: str, rabbitmq_url: str, tmp_path: Path
) -> None:
    """Play every game (the results are written, nothing counted yet); every job published."""
    env = django_env(database_url, rabbitmq_url, JOB_RETRY_DELAYS="0.2,0.4")
    script = run_play_script(plan, env=env, work_dir=tmp_path, tables=4)
    played = script_result(script, timeout=WITHIN)
    assert all(game["published"] for game in played), [g for g in played if not g["published"]]
    assert counted(database_url) == (0, len(plan))


def holding_a_full_hand(worker: Worker, rabbitmq_url: str, jobs_total: int) -> None:
    """Until the worker holds CONCURRENCY jobs (stuck on the lock) and the rest wait in
    the queue for nobody."""
    wait_for(lambda: worker.in_hand() == CONCURRENCY, f"{CONCURRENCY} jobs in hand")
    wait_for(lambda: ready(rabbitmq_url) == jobs_total - CONCURRENCY, "the rest queued")


def sigterm(worker: Worker) -> float:
    """SIGTERM to the worker; the monotonic time it was sent, once the worker said it
    stopped taking jobs with all of its hand still held."""
    assert worker.proc is not None
    sent = time.monotonic()
    worker.child.send(signal.SIGTERM)
    line = f"worker stopping: no new jobs; finishing {CONCURRENCY} in hand"
    wait_for(lambda: line in worker.log(), repr(line))
    return sent


def exit_code(worker: Worker, within: float) -> int:
    assert worker.proc is not None
    try:
        return worker.proc.wait(within)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"{worker.name} still running after {within}s:\n{worker.log()}"
        ) from exc


def second_worker_finishes(
    start_worker: Callable[..., Worker],
    database_url: str,
    rabbitmq_url: str,
    plan: list[dict[str, Any]],
    jobs_left: int,
) -> None:
    """A fresh worker takes exactly the jobs left in the queue; then every game is
    counted once and the totals are exact."""
    assert ready(rabbitmq_url) == jobs_left
    relief = start_worker("relief", grace=30)

    def done() -> bool:
        return (
            jobs(relief, "ok") >= jobs_left
            and relief.in_hand() == 0
            and ready(rabbitmq_url) == 0
            and counted(database_url) == (len(plan), len(plan))
        )

    wait_for(done, f"{jobs_left} jobs done by the relief worker and every game counted")
    assert jobs(relief, "ok") == jobs_left, "a job was handed out twice"
    assert jobs(relief, "retried") == jobs(relief, "dead") == 0
    assert ready(rabbitmq_url, DEAD_QUEUE) == 0
    assert totals(database_url) == expected_totals(plan)


# --- the tests ------------------------------------------------------------------------


def busy_worker(
    start_worker: Callable[..., Worker],
    name: str,
    grace: float,
    database_url: str,
    rabbitmq_url: str,
    tmp_path: Path,
) -> tuple[Worker, list[dict[str, Any]]]:
    """A worker with a full hand of jobs stuck on the locked leaderboard, and the plan."""
    plan = plan_games(GAMES)
    worker = start_worker(name, grace=grace)
    play_all(plan, database_url, rabbitmq_url, tmp_path)
    holding_a_full_hand(worker, rabbitmq_url, len(plan))
    return worker, plan


def test_sigterm_finishes_the_jobs_in_hand_acks_them_and_exits_0(
    start_worker: Callable[..., Worker],
    leaderboard_locked: Callable[[], None],
    database_url: str,
    rabbitmq_url: str,
    tmp_path: Path,
) -> None:
    grace = 60.0
    worker, plan = busy_worker(
        start_worker, "draining", grace, database_url, rabbitmq_url, tmp_path
    )

    sent = sigterm(worker)
    leaderboard_locked()  # its jobs can finish now
    assert exit_code(worker, grace + WITHIN) == 0, worker.log()[-3000:]
    elapsed = time.monotonic() - sent
    assert elapsed < grace, f"exited {elapsed:.1f}s after SIGTERM: not within its {grace}s grace"
    assert "worker stopped" in worker.log()
    # Its hand was finished and acknowledged: nothing of it came back to the queue,
    # and it took nothing new after the signal.
    assert counted(database_url)[0] >= CONCURRENCY
    second_worker_finishes(
        start_worker, database_url, rabbitmq_url, plan, jobs_left=len(plan) - CONCURRENCY
    )


def test_sigterm_hands_back_jobs_unfinished_at_the_end_of_the_grace_and_exits_0(
    start_worker: Callable[..., Worker],
    leaderboard_locked: Callable[[], None],
    database_url: str,
    rabbitmq_url: str,
    tmp_path: Path,
) -> None:
    grace = 2.0
    worker, plan = busy_worker(
        start_worker, "out-of-time", grace, database_url, rabbitmq_url, tmp_path
    )

    sigterm(worker)
    # The lock stays: no job in hand can finish within the grace.
    assert exit_code(worker, grace + WITHIN) == 0, worker.log()[-3000:]
    assert "worker stopped" in worker.log()
    # Nothing acknowledged: the whole hand is back in the queue, next to the rest.
    wait_for(lambda: ready(rabbitmq_url) == len(plan), "every job back in the queue")
    # A statement of the gone worker still waiting on the lock in PostgreSQL may complete
    # on release (autocommit); its job, redelivered, must then count nothing twice.
    leaderboard_locked()
    second_worker_finishes(start_worker, database_url, rabbitmq_url, plan, jobs_left=len(plan))
