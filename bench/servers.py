"""The contenders' servers: replicas (and, for the game, job workers) on a throwaway database.

The game runs as production runs it (`deploy.server`, production settings, PostgreSQL and
the RabbitMQ layer, migrated first); the other contenders under uvicorn with
bench.settings. Rate limits are lifted. `cpu_of` and `DbCpu` measure the CPU the replicas
and the PostgreSQL backends of the game's database spend. RESULTS: where runs write.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from bench.contenders import Contender
from devtools.databases import throwaway_database
from devtools.processes import Child, free_port, wait_http

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PY = sys.executable
RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
POSTGRES = os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")


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
            # One client address holds every socket of the run; rooms are the bench's.
            "MAX_SOCKETS_PER_ADDRESS": "10000000",
            "MAX_ROOM_MEMBERS": "10000000",
            "ROOM_FANOUT_PER_SECOND": "10000000",
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
