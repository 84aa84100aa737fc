"""The job topology on a real RabbitMQ: quorum queues, the delivery limit, the dead letters
replayed, the queue-depth gauge, the computer's think time as a delay.

Real `run_workers` processes (tests/support/workers.py) on the module's throwaway
PostgreSQL database and RabbitMQ vhost; the poison test runs a bare worker of
workers/runtime.py whose job kills it (tests/workers/crashing_worker.py). Every worker
and publisher of the module declares the jobs queue with JOB_DELIVERY_LIMIT=2 (a queue's
arguments are fixed: one value per vhost). Waits are bounded (tests/support/timing.py);
nothing asserts on the machine's speed except the think-time test, whose bound is twice
the think time while serial handling would need ten times.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import psycopg
import pytest

from devtools.processes import ROOT, Child
from gameclient.connection import Connection
from tests.support.broker import throwaway_vhost
from tests.support.server import UvicornServer
from tests.support.timing import budget
from tests.support.workers import (
    DEAD_QUEUE,
    JOBS_EXCHANGE,
    JOBS_QUEUE,
    Workers,
    delay_queue,
    django_env,
    query,
    retry_queue,
    run_play_script,
    sample,
    script_result,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.fleet]

LIMIT = 2  # JOB_DELIVERY_LIMIT of the module: a job is delivered at most 3 times
RETRY_DELAYS = "0.2,0.4"


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture
def env(database_url: str, rabbitmq_url: str) -> dict[str, str]:
    return django_env(
        database_url,
        rabbitmq_url,
        JOB_RETRY_DELAYS=RETRY_DELAYS,
        JOB_DELIVERY_LIMIT=str(LIMIT),
        WORKER_QUEUE_DEPTH_SECONDS="0.2",
        BOT_THINK_SECONDS="0",
    )


# --- helpers --------------------------------------------------------------------------


def vhost_of(url: str) -> str:
    return unquote(urlsplit(url).path[1:]) or "/"


def broker_queues(url: str) -> dict[str, dict[str, Any]]:
    """name -> {type, arguments} of every queue in the URL's vhost (rabbitmqctl)."""
    out = subprocess.run(
        ["rabbitmqctl", "list_queues", "-q", "-p", vhost_of(url), "name", "type", "arguments",
         "--formatter", "json"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    rows = json.loads(out)
    return {row["name"]: row for row in rows}


def arguments(row: dict[str, Any]) -> dict[str, Any]:
    """rabbitmqctl prints arguments as [[name, type, value], ...] or as a map, by version."""
    raw = row["arguments"]
    if isinstance(raw, list):
        return {entry[0]: entry[-1] for entry in raw}
    return dict(raw or {})


async def ready(url: str, name: str) -> int:
    connection = await aio_pika.connect(url, timeout=budget(5))
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)


def job(kind: str, key: str, body: dict[str, Any] | None = None) -> aio_pika.Message:
    return aio_pika.Message(
        json.dumps(body if body is not None else {"key": key}).encode(),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=key,
        type=kind,
        headers={"x-attempt": 0},
    )


async def publish(url: str, messages: list[aio_pika.Message], routing_key: str = "") -> None:
    """Publish with confirms: to the jobs exchange under each message's kind, or (with
    `routing_key`) to that queue by name."""
    connection = await aio_pika.connect(url, timeout=budget(5))
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        if routing_key:
            for message in messages:
                await channel.default_exchange.publish(message, routing_key=routing_key)
            return
        exchange = await channel.get_exchange(JOBS_EXCHANGE)
        for message in messages:
            await exchange.publish(message, routing_key=str(message.type))


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=budget(60),
    )  # fmt: skip


def finished_games(env: dict[str, str], work_dir: Path, count: int) -> list[str]:
    """`count` games played to the end (X wins) through game.services by the play script,
    their `game.finished` jobs not published: the keys of the uncounted results."""
    plan = [
        {"room": f"rp-{secrets.token_hex(3)}", "x": f"x{i}", "o": f"o{i}",
         "cells": [0, 3, 1, 4, 2], "winner": "X"}
        for i in range(count)
    ]  # fmt: skip
    played = script_result(
        run_play_script(plan, env=env, work_dir=work_dir, publish=False), timeout=budget(60)
    )
    return [str(game["key"]) for game in played]


def counted(database_url: str, key: str) -> bool:
    rows = query(database_url, "SELECT counted FROM game_gameresult WHERE key = %s", (key,))
    return bool(rows and rows[0][0])


# --- the topology -------------------------------------------------------------------------


async def test_the_job_topology_is_quorum_queues_with_a_delivery_limit(
    start_workers: Callable[..., Workers], env: dict[str, str], rabbitmq_url: str
) -> None:
    from workers.publisher import JobPublisher

    start_workers(1)
    # A publisher declares the same topology (same arguments: no PRECONDITION_FAILED)
    # and a delay queue for its delayed jobs.
    publisher = JobPublisher(
        rabbitmq_url, kinds=("game.finished",), retry_delays=(0.2, 0.4), delivery_limit=LIMIT
    )
    try:
        await publisher.publish("game.finished", {"key": "nothing"}, key="nothing", delay=30)
    finally:
        await publisher.close()

    queues = await asyncio.to_thread(broker_queues, rabbitmq_url)
    ours = {name: row for name, row in queues.items() if name.startswith(JOBS_QUEUE)}
    expected = {JOBS_QUEUE, DEAD_QUEUE, retry_queue(0.2), retry_queue(0.4), delay_queue(30)}
    assert set(ours) == expected, sorted(ours)
    assert {name: row["type"] for name, row in ours.items()} == dict.fromkeys(expected, "quorum")
    jobs = arguments(ours[JOBS_QUEUE])
    assert jobs["x-delivery-limit"] == LIMIT, jobs
    assert jobs["x-dead-letter-routing-key"] == DEAD_QUEUE, jobs
    for name in (JOBS_QUEUE, retry_queue(0.2), delay_queue(30)):
        held = arguments(ours[name])
        assert held["x-dead-letter-strategy"] == "at-least-once", (name, held)
        assert held["x-overflow"] == "reject-publish", (name, held)
    assert arguments(ours[delay_queue(30)])["x-message-ttl"] == 30_000
    assert await ready(rabbitmq_url, delay_queue(30)) == 1  # the delayed job waits there


async def test_a_classic_queue_of_the_same_name_is_reported_and_legacy_queues_are_moved(
    database_url: str,
) -> None:
    """An earlier version's classic `tictac.jobs.v2`-named queue makes the declaration fail
    with a TopologyMismatch that says what to do; the classic queues of earlier versions
    (`tictac.jobs`, `tictac.jobs.dead`) are moved into the quorum topology by
    `dead_letters move-legacy`, each message once."""
    from workers import topology

    with throwaway_vhost() as url:
        connection = await aio_pika.connect(url, timeout=budget(5))
        async with connection:
            channel = await connection.channel()
            await channel.declare_queue(JOBS_QUEUE, durable=True)  # classic
            with pytest.raises(topology.TopologyMismatch, match="cannot change in place"):
                await topology.declare(
                    await connection.channel(), kinds=("game.finished",), retry_delays=()
                )
            await channel.queue_delete(JOBS_QUEUE)
            await topology.declare(
                await connection.channel(),
                kinds=("game.finished",),
                retry_delays=(),
                delivery_limit=LIMIT,
            )
            legacy = await connection.channel(publisher_confirms=True)
            await legacy.declare_queue("tictac.jobs", durable=True)
            await legacy.declare_queue("tictac.jobs.dead", durable=True)
            for i in range(3):
                await legacy.default_exchange.publish(
                    job("game.finished", f"old-{i}"), routing_key="tictac.jobs"
                )
            dead = job("game.finished", "old-dead")
            dead.headers = {"x-attempt": 3, "x-error": "boom"}
            await legacy.default_exchange.publish(dead, routing_key="tictac.jobs.dead")

        moved = await asyncio.to_thread(
            manage, django_env(database_url, url, JOB_DELIVERY_LIMIT=str(LIMIT)), "dead_letters",
            "move-legacy",
        )  # fmt: skip
        assert moved.returncode == 0, moved.stderr
        assert "tictac.jobs: moved 3, left 0" in moved.stdout, moved.stdout
        assert "tictac.jobs.dead: moved 1, left 0" in moved.stdout, moved.stdout
        # (a passive declare's count: rabbitmqctl's `messages` lags for quorum queues)
        assert await ready(url, JOBS_QUEUE) == 3
        assert await ready(url, DEAD_QUEUE) == 1
        assert await ready(url, "tictac.jobs") == await ready(url, "tictac.jobs.dead") == 0
        again = await asyncio.to_thread(
            manage, django_env(database_url, url, JOB_DELIVERY_LIMIT=str(LIMIT)), "dead_letters",
            "move-legacy",
        )  # fmt: skip
        assert "tictac.jobs: moved 0, left 0" in again.stdout, again.stdout


# --- poison: a job that kills its worker ------------------------------------------------------


def test_a_job_that_kills_its_worker_is_dead_lettered_after_its_delivery_limit(
    clean: None, rabbitmq_url: str, tmp_path: Path
) -> None:
    """No exception reaches the runtime (the process exits): each delivery kills one
    worker process, and RabbitMQ dead-letters the job after LIMIT redeliveries instead
    of handing it out forever; the job behind it is done once."""
    key, innocent = f"poison-{secrets.token_hex(3)}", f"innocent-{secrets.token_hex(3)}"
    crashes = 0
    runs: list[Child] = []

    def start() -> Child:
        child = Child(name=f"crashing-{len(runs)}", log_path=tmp_path / f"crashing-{len(runs)}.log")
        child.spawn(
            [sys.executable, "-m", "tests.workers.crashing_worker", rabbitmq_url, str(LIMIT)],
            {**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        runs.append(child)
        wait_for(
            lambda: "worker consuming" in child.log_text() or not child.alive,
            "the crashing worker consuming",
            budget(30),
        )
        return child

    def settled(child: Child) -> Callable[[], bool]:
        return lambda: not child.alive or f"fine {innocent}" in child.log_text()

    first = start()
    asyncio.run(publish(rabbitmq_url, [job("crash", key), job("fine", innocent)]))
    try:
        child = first
        # Each run either dies on the poison or (once it is dead-lettered) does the
        # innocent job and stays up; a bounded number of runs.
        for _ in range(LIMIT + 3):
            wait_for(settled(child), "a crash or the innocent job done", budget(30))
            if child.alive:
                break
            assert child.returncode == 3, child.log_text()[-2000:]
            crashes += 1
            child = start()
        logs = "".join(run.log_text() for run in runs)
        assert crashes == LIMIT + 1, f"{crashes} crashes\n{logs[-4000:]}"
        assert logs.count(f"fine {innocent}") == 1, logs[-4000:]

        async def dead_letter() -> Any:
            connection = await aio_pika.connect(rabbitmq_url, timeout=budget(5))
            async with connection:
                channel = await connection.channel()
                queue = await channel.declare_queue(DEAD_QUEUE, passive=True)
                message = await queue.get(no_ack=True, fail=False, timeout=budget(5))
                rest = await channel.declare_queue(DEAD_QUEUE, passive=True)
                return message, rest.declaration_result.message_count

        message, left = asyncio.run(dead_letter())
        assert message is not None
        assert left == 0
        assert message.message_id == key
        assert message.headers["x-first-death-reason"] == "delivery_limit", message.headers
        assert asyncio.run(ready(rabbitmq_url, JOBS_QUEUE)) == 0
    finally:
        for run in runs:
            run.stop(10)


# --- dead letters listed and replayed ----------------------------------------------------------


async def test_the_replay_command_puts_a_dead_letter_back_exactly_once(
    start_workers: Callable[..., Workers],
    env: dict[str, str],
    database_url: str,
    rabbitmq_url: str,
    tmp_path: Path,
) -> None:
    """Two dead `game.finished` jobs (as the worker leaves them: x-attempt, x-error); `list`
    shows both and removes nothing; `replay --key` puts one back and the worker handles it
    once, the other stays; `replay --all` the other; then the dead queue is empty, nothing
    is left to handle, and a further replay finds nothing. (Counted by the worker's job
    metric: its sweep may also count the results, idempotently, but is no job.)"""
    workers = start_workers(1)  # declares the topology
    keys = sorted(await asyncio.to_thread(finished_games, env, tmp_path, 2))
    dead = []
    for key in keys:
        message = job("game.finished", key)
        message.headers = {"x-attempt": 3, "x-error": "OperationalError('db away')"}
        dead.append(message)
    await publish(rabbitmq_url, dead, routing_key=DEAD_QUEUE)

    def handled() -> float:
        return workers[0].metric("tictac_jobs_total", kind="game.finished", outcome="ok")

    async def settled(jobs: int) -> None:
        """`jobs` handled, none queued or in hand: no further copy is on its way."""
        await asyncio.to_thread(wait_for, lambda: handled() >= jobs, f"{jobs} jobs", budget(10))
        assert await ready(rabbitmq_url, JOBS_QUEUE) == 0
        assert workers[0].in_hand() == 0
        assert handled() == jobs

    listed = await asyncio.to_thread(manage, env, "dead_letters", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    letters = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(lt["kind"], lt["key"], lt["attempts"]) for lt in letters] == [
        ("game.finished", key, 3) for key in keys
    ]
    assert all("db away" in lt["reason"] for lt in letters)
    assert await ready(rabbitmq_url, DEAD_QUEUE) == 2  # listing removed nothing
    assert handled() == 0

    one = await asyncio.to_thread(manage, env, "dead_letters", "replay", "--key", keys[0])
    assert one.returncode == 0, one.stderr
    assert "replayed 1; left in tictac.jobs.v2.dead: 1" in one.stdout, one.stdout
    await settled(1)
    assert await ready(rabbitmq_url, DEAD_QUEUE) == 1

    rest = await asyncio.to_thread(manage, env, "dead_letters", "replay", "--all")
    assert "replayed 1; left in tictac.jobs.v2.dead: 0" in rest.stdout, rest.stdout
    await settled(2)
    assert await ready(rabbitmq_url, DEAD_QUEUE) == 0
    nothing = await asyncio.to_thread(manage, env, "dead_letters", "replay", "--all")
    assert "replayed 0" in nothing.stdout, nothing.stdout
    await settled(2)
    assert all(counted(database_url, key) for key in keys)
    rows = query(database_url, "SELECT sum(wins), sum(losses) FROM game_leaderboardentry")
    assert rows == [(2, 2)], rows


# --- the queue depth gauge -------------------------------------------------------------------


def test_the_queue_depth_gauge_follows_the_broker(
    start_workers: Callable[..., Workers], database_url: str, rabbitmq_url: str
) -> None:
    """One worker (one job in hand) stuck on a locked table, the sweep stuck with it: N
    more jobs wait in the queue and D in the dead queue, and the gauge says N and D; once
    the table is free the queue empties and the gauge says 0."""
    workers = start_workers(1, concurrency=1)
    worker = workers[0]
    waiting, dead = 12, 3
    conninfo = database_url.replace("postgres://", "postgresql://", 1)
    with psycopg.connect(conninfo) as lock:
        lock.execute("LOCK TABLE game_gameresult IN ACCESS EXCLUSIVE MODE")
        keys = [f"depth-{i}-{secrets.token_hex(2)}" for i in range(waiting + 1)]
        asyncio.run(publish(rabbitmq_url, [job("game.finished", key) for key in keys]))
        asyncio.run(
            publish(
                rabbitmq_url,
                [job("game.finished", f"dead-{i}") for i in range(dead)],
                routing_key=DEAD_QUEUE,
            )
        )
        wait_for(lambda: worker.in_hand() == 1, "the first job in hand", budget(10))

        def gauge() -> tuple[float, float]:
            text = worker.metrics_text()
            return (
                sample(text, "tictac_jobs_queue_depth", queue=JOBS_QUEUE),
                sample(text, "tictac_jobs_queue_depth", queue=DEAD_QUEUE),
            )

        try:
            wait_for(lambda: gauge() == (waiting, dead), f"depths {waiting}, {dead}", budget(10))
        except AssertionError as exc:
            raise AssertionError(f"{exc}: the gauge says {gauge()}") from None
        lock.rollback()
    wait_for(lambda: gauge() == (0, dead), "the jobs queue depth back to 0", budget(20))
    assert worker.metric("tictac_jobs_total", kind="game.finished", outcome="ok") == waiting + 1


# --- the computer's think time -------------------------------------------------------------------


async def test_bot_moves_wait_in_parallel_not_one_after_another(
    start_workers: Callable[..., Workers],
    start_replica: Callable[..., UvicornServer],
    clients: Callable[..., Awaitable[Connection]],
) -> None:
    """K rooms where it becomes the computer's turn at once, one worker with 4 slots and a
    think time of `think`: every computer move lands within about one think time (bound:
    2 x think + margin). Handled one slot each for the think time, they would need
    K / 4 x think = 10 x think."""
    think, rooms = 2.0, 40
    workers = start_workers(1, concurrency=4)
    server = start_replica("web-1", BOT_THINK_SECONDS=str(think))
    tag = secrets.token_hex(2)
    humans: list[Connection] = await asyncio.gather(
        *(clients(f"{server.ws_url}/ws/game/par-{tag}-{i}", f"h{i}") for i in range(rooms))
    )

    async def seat(human: Connection) -> None:
        await human.send({"type": "join", "name": "hu"})
        await human.next("joined")
        await human.send({"type": "bot"})
        await human.state_where(lambda s: s["status"] == "playing", "the bot seated")

    await asyncio.gather(*(seat(h) for h in humans))
    await asyncio.gather(*(h.send({"type": "move", "cell": 4, "version": 2}) for h in humans))
    started = time.monotonic()
    await asyncio.gather(*(h.at_version(3) for h in humans))
    deadline = started + 2 * think + budget(3.0)

    async def answered(human: Connection) -> bool:
        with contextlib.suppress(TimeoutError, AssertionError):
            await human.at_version(4, within=max(0.0, deadline - time.monotonic()))
            return True
        return False

    done = await asyncio.gather(*(answered(h) for h in humans))
    took = time.monotonic() - started
    assert sum(done) == rooms, (
        f"{sum(done)} of {rooms} computer moves within {deadline - started:.1f}s"
        f" (serial: {rooms / 4 * think:.0f}s)"
    )
    assert took >= think * 0.9, f"the computer moved after {took:.2f}s, before its think time"
    assert workers[0].metric("tictac_jobs_total", kind="bot.move", outcome="ok") == rooms
    print(f"workers-metric bot_parallel rooms={rooms} think={think} seconds={took:.2f}")
