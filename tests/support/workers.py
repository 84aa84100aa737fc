"""The worker fleet in end-to-end tests: worker processes, an isolated broker and database.

- `Worker`: one `python manage.py run_workers` process, the leader of its own process
  group, its output in a log file; SIGKILL or SIGTERM it, read its Prometheus metrics.
- `throwaway_vhost()` (tests/support/broker.py, the one helper for vhosts): a RabbitMQ
  vhost of its own (the job queue names are fixed, so a vhost keeps other suites'
  workers and leftovers away); `purge_job_queues()` empties the job queues before a test.
- `migrate()`, `reset_tables()`, `query()`: the PostgreSQL database of a test module
  (devtools.databases' `throwaway_database()`), read with psycopg (the test process's
  Django database stays whatever pytest-django set up).
- Run as a script (`python -m tests.support.workers play PLAN.json`), it plays the
  games of a plan through game.services against `DATABASE_URL` and publishes each
  finished game's `game.finished` job, the way a replica does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from devtools.processes import ROOT, Child, free_port
from tests.support.broker import throwaway_vhost as throwaway_vhost  # the suites import it here

# workers/topology.py's names, without importing the app into the test process.
JOBS_EXCHANGE = "tictac.jobs.v2"
JOBS_QUEUE = "tictac.jobs.v2"
DEAD_QUEUE = "tictac.jobs.v2.dead"
# Every delay a test or a default configuration uses: their retry queues get purged.
KNOWN_RETRY_DELAYS = (0.2, 0.4, 1.0, 5.0, 25.0)
TABLES = (
    "game_gameresult",
    "game_leaderboardentry",
    "game_matchticket",
    "game_connection",
    "game_replica",
    "game_room",
)

_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --- RabbitMQ -------------------------------------------------------------------------


def retry_queue(delay: float) -> str:
    """workers.topology.retry_queue, without importing the app into the test process."""
    return f"{JOBS_QUEUE}.retry.{delay:g}s"


def delay_queue(delay: float) -> str:
    """workers.topology.delay_queue (a job published with a delay waits there)."""
    return f"{JOBS_QUEUE}.delay.{delay:g}s"


async def purge_job_queues(
    url: str,
    retry_delays: Iterable[float] = KNOWN_RETRY_DELAYS,
    within: float = 60.0,
    delays: Iterable[float] = (),
) -> dict[str, int]:
    """Empty the job queues that exist (passive declare; a missing one is skipped).

    Returns the number of messages purged per queue. Starts over while the broker
    is unreachable or goes away meanwhile (another suite may be restarting it).
    """
    import aio_pika
    import aiormq
    from aio_pika.exceptions import ChannelClosed

    names = [
        JOBS_QUEUE,
        DEAD_QUEUE,
        *(retry_queue(d) for d in retry_delays),
        *(delay_queue(d) for d in delays),
    ]
    deadline = time.monotonic() + within
    while True:
        try:
            purged: dict[str, int] = {}
            connection = await aio_pika.connect(url, timeout=5)
            async with connection:
                for name in names:
                    channel = await connection.channel()
                    try:
                        queue = await channel.declare_queue(name, passive=True)
                    except ChannelClosed:  # 404 NOT_FOUND closes the channel
                        continue
                    result = await queue.purge()
                    purged[name] = int(getattr(result, "message_count", 0) or 0)
                    await channel.close()
            return purged
        except (OSError, TimeoutError, aiormq.exceptions.AMQPError, asyncio.CancelledError):
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # a real cancellation, not the broker closing the connection
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def wait_for(check: Callable[[], Any], what: str, within: float, every: float = 0.05) -> Any:
    """Until `check()` returns something truthy (returned); AssertionError after `within`."""
    deadline = time.monotonic() + within
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {within}s")
        time.sleep(every)


# --- PostgreSQL -----------------------------------------------------------------------


def django_env(database_url: str, rabbitmq_url: str, **extra: str) -> dict[str, str]:
    """The environment of an app process (worker, migrate, script) on these backends."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": database_url,
        "RABBITMQ_URL": rabbitmq_url,
        **extra,
    }


def migrate(database_url: str) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=django_env(database_url, ""),
        check=True,
        timeout=120,
    )


def _conninfo(database_url: str) -> str:
    return urlunsplit(urlsplit(database_url)._replace(scheme="postgresql"))


def query(database_url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement in autocommit mode; its rows (empty for statements without any)."""
    import psycopg

    with psycopg.connect(_conninfo(database_url), autocommit=True, connect_timeout=5) as conn:
        cursor = conn.execute(sql, params)
        return list(cursor.fetchall()) if cursor.description else []


def reset_tables(database_url: str) -> None:
    """Every game table empty, ids restarting at 1: a test starts from nothing."""
    query(database_url, f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")


# --- worker processes -----------------------------------------------------------------


class Worker:
    """`python manage.py run_workers --concurrency N --metrics-port P` in its own group."""

    def __init__(
        self,
        *,
        name: str,
        env: Mapping[str, str],
        log_dir: Path,
        concurrency: int = 4,
        metrics: bool = True,
        grace: float = 5.0,
    ) -> None:
        self.name = name
        self.env = dict(env)
        self.concurrency = concurrency
        self.metrics_port = free_port() if metrics else 0
        self.grace = grace
        self.child = Child(name=name, log_path=log_dir / f"{name}.log")

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.child.proc

    @property
    def log_path(self) -> Path:
        return self.child.log_path

    @property
    def pid(self) -> int | None:
        return self.child.pid

    @property
    def alive(self) -> bool:
        return self.child.alive

    def start(self) -> Worker:
        argv = [
            sys.executable,
            "manage.py",
            "run_workers",
            "--concurrency",
            str(self.concurrency),
            "--metrics-port",
            str(self.metrics_port),
            "--grace",
            str(self.grace),
        ]
        self.child.spawn(argv, {**self.env, "REPLICA_NAME": self.name})
        return self

    def log(self) -> str:
        return self.child.log_text()

    def wait_consuming(self, timeout: float = 60.0) -> None:
        """Until the worker logged that it consumes the job queue (a worker started
        while the broker is away waits for it); an exit fails at once."""
        deadline = time.monotonic() + timeout
        while "worker consuming" not in self.log():
            if not self.alive:
                raise AssertionError(f"{self.name} exited:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not consuming after {timeout}s:\n{self.log()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the whole group: no cleanup, unacked jobs go back to the broker."""
        self.child.kill()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (finish the jobs in hand), SIGKILL for the group after `timeout`."""
        self.child.stop(timeout)

    def metrics_text(self, timeout: float = 2.0) -> str:
        assert self.metrics_port, f"{self.name} runs without a metrics port"
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with _no_proxy.open(url, timeout=timeout) as response:
            return str(response.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample (0 when the series does not exist yet)."""
        return sample(self.metrics_text(), name, **labels)

    def in_hand(self) -> float | None:
        """`tictac_jobs_in_hand`, or None while the metrics endpoint does not answer."""
        try:
            return self.metric("tictac_jobs_in_hand")
        except OSError:
            return None


def sample(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text; 0.0 when absent."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line.strip())
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return 0.0


class Workers:
    """A set of worker processes sharing one environment; a context manager."""

    def __init__(
        self,
        count: int,
        *,
        env: Mapping[str, str],
        log_dir: Path,
        concurrency: int = 4,
        metrics: bool = True,
    ) -> None:
        self.members = [
            Worker(
                name=f"worker-{i + 1}",
                env=env,
                log_dir=log_dir,
                concurrency=concurrency,
                metrics=metrics,
            )
            for i in range(count)
        ]

    def __enter__(self) -> Workers:
        try:
            for worker in self.members:
                worker.start()
            for worker in self.members:
                worker.wait_consuming()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __getitem__(self, index: int) -> Worker:
        return self.members[index]

    def __iter__(self) -> Iterator[Worker]:
        return iter(self.members)

    def stop(self) -> None:
        for worker in self.members:  # all drain at once
            if worker.alive:
                worker.child.signal_group(signal.SIGTERM)
        for worker in self.members:
            worker.stop(timeout=10)

    def logs(self, chars: int = 2000) -> str:
        return "\n".join(f"--- {w.name} ({w.log_path}):\n{w.log()[-chars:]}" for w in self)


def expected_totals(plan: list[dict[str, Any]]) -> dict[str, tuple[int, int, int]]:
    """name -> (wins, losses, draws) after every game of the plan is counted once."""
    tally: dict[str, list[int]] = {}
    for game in plan:
        for mark, name in (("X", game["x"]), ("O", game["o"])):
            row = tally.setdefault(name, [0, 0, 0])
            if game["winner"] is None:
                row[2] += 1
            elif game["winner"] == mark:
                row[0] += 1
            else:
                row[1] += 1
    return {name: (w, lo, d) for name, (w, lo, d) in tally.items()}


# --- the game-playing script ----------------------------------------------------------


def play_plan(plan_path: Path, *, tables: int, publish: bool) -> list[dict[str, Any]]:
    """Play every game of the plan (interleaved over `tables` coroutines) via game.services.

    The plan is a JSON list of {"room", "x", "o", "cells"}; `cells` are the moves in
    order, X first. With `publish`, each finished game's `game.finished` job goes to
    the broker right after its last move, as a replica publishes it.
    """
    import django

    django.setup()
    from django.conf import settings

    from game import jobs, presence, services
    from game.aio import call
    from workers.publisher import JobPublisher

    plan: list[dict[str, Any]] = json.loads(plan_path.read_text())
    played: list[dict[str, Any]] = []
    publisher = JobPublisher(
        settings.RABBITMQ_URL,
        kinds=jobs.KINDS,
        retry_delays=settings.JOB_RETRY_DELAYS,
        delivery_limit=settings.JOB_DELIVERY_LIMIT,
    )

    async def play_one(game: dict[str, Any]) -> None:
        room = game["room"]
        await call(presence.connection_open, code=room, channel_name=f"{room}.x", replica="script")
        version = 0
        for name, seat in ((game["x"], "x"), (game["o"], "o")):
            await call(
                services.seat_join,
                code=room,
                channel_name=f"{room}.{seat}",
                held=None,
                name=name,
                token=None,
            )
            version += 1
        for turn, cell in enumerate(game["cells"]):
            version = await call(
                services.move_play,
                code=room,
                mark="X" if turn % 2 == 0 else "O",
                cell=cell,
                version=version,
            )
            await asyncio.sleep(0)  # let the other tables move in between
        key = services.result_key(room, version)
        published = False
        if publish:
            # As a replica does (game.jobs.dispatch): a failed publish is logged, not
            # raised; the workers' sweep finds the result uncounted.
            try:
                await publisher.publish(jobs.GAME_FINISHED, {"key": key}, key=key)
                published = True
            except Exception as exc:
                print(f"publish {key} failed: {exc!r}", file=sys.stderr)
        played.append(
            {"room": room, "key": key, "published": published, "published_at": time.time()}
        )

    async def table(queue: asyncio.Queue[dict[str, Any]]) -> None:
        while not queue.empty():
            await play_one(queue.get_nowait())

    async def main() -> None:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for game in plan:
            queue.put_nowait(game)
        try:
            await asyncio.gather(*(table(queue) for _ in range(tables)))
        finally:
            if publish:
                await publisher.close()

    asyncio.run(main())
    return played


def run_play_script(
    plan: list[dict[str, Any]],
    *,
    env: Mapping[str, str],
    work_dir: Path,
    tables: int = 8,
    publish: bool = True,
) -> subprocess.Popen[bytes]:
    """Start the script on `plan`; its stdout (a JSON list of played games) goes to a file."""
    plan_path = work_dir / f"plan-{secrets.token_hex(3)}.json"
    plan_path.write_text(json.dumps(plan))
    argv = [sys.executable, "-m", "tests.support.workers", "play", str(plan_path)]
    argv += ["--tables", str(tables)] + ([] if publish else ["--no-publish"])
    out = open(plan_path.with_suffix(".out"), "wb")  # noqa: SIM115 - owned by the child
    err = open(plan_path.with_suffix(".err"), "wb")  # noqa: SIM115
    try:
        return subprocess.Popen(
            argv, cwd=ROOT, env=dict(env), stdout=out, stderr=err, start_new_session=True
        )
    finally:
        out.close()
        err.close()


def script_failed(proc: subprocess.Popen[bytes]) -> str | None:
    """The script's stderr if it already exited with an error, else None."""
    if proc.poll() in (None, 0):
        return None
    argv = proc.args
    assert isinstance(argv, list)
    return Path(str(argv[4])).with_suffix(".err").read_text(errors="replace")[-3000:]


def script_result(proc: subprocess.Popen[bytes], timeout: float) -> list[dict[str, Any]]:
    """Wait for the script; its played games, or an AssertionError with its stderr."""
    argv = proc.args
    assert isinstance(argv, list)
    plan_path = Path(str(argv[4]))
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        raise AssertionError(f"the play script took over {timeout}s") from None
    stderr = plan_path.with_suffix(".err").read_text(errors="replace")
    assert proc.returncode == 0, f"play script failed ({proc.returncode}):\n{stderr[-3000:]}"
    played: list[dict[str, Any]] = json.loads(plan_path.with_suffix(".out").read_text())
    return played


def _main(argv: Sequence[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.support.workers")
    commands = parser.add_subparsers(dest="command", required=True)
    play = commands.add_parser("play", help="play a plan of games and publish their jobs")
    play.add_argument("plan", type=Path)
    play.add_argument("--tables", type=int, default=8)
    play.add_argument("--no-publish", action="store_true")
    args = parser.parse_args(argv)
    played = play_plan(args.plan, tables=args.tables, publish=not args.no_publish)
    sys.stdout.write(json.dumps(played))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
