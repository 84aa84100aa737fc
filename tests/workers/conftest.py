"""Fixtures of the worker suites: a migrated PostgreSQL database per module (the broker's
vhost is tests/conftest.py's `rabbitmq_url`), emptied before each test; workers and
replicas started on them with the module's `env`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.databases import throwaway_database
from tests.support.server import UvicornServer
from tests.support.timing import budget
from tests.support.workers import Workers, django_env, migrate, purge_job_queues, reset_tables


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with throwaway_database() as url:
        migrate(url)
        yield url


@pytest.fixture
def clean(database_url: str, rabbitmq_url: str) -> None:
    """No rows and no queued jobs left over from an earlier test or run."""
    reset_tables(database_url)
    asyncio.run(purge_job_queues(rabbitmq_url))


@pytest.fixture
def env(database_url: str, rabbitmq_url: str) -> dict[str, str]:
    """The environment of the module's workers (a module may override it): fast retries,
    no think time."""
    return django_env(database_url, rabbitmq_url, JOB_RETRY_DELAYS="0.2,0.4", BOT_THINK_SECONDS="0")


@pytest.fixture
def start_workers(
    clean: None, env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., Workers]]:
    """start(count, concurrency=4, **extra) -> Workers consuming with `env` and `extra`; all
    stopped (logs printed) at teardown."""
    started: list[Workers] = []

    def start(count: int, concurrency: int = 4, **extra: str) -> Workers:
        workers = Workers(
            count, env={**env, **extra}, log_dir=tmp_path / "workers", concurrency=concurrency
        )
        started.append(workers)
        return workers.__enter__()

    try:
        yield start
    finally:
        for workers in started:
            workers.stop()
            print(workers.logs())
        leftovers = [w.pid for ws in started for w in ws if w.alive]
        assert not leftovers, f"workers left running: {leftovers}"


# What a replica takes of the workers' `env` (it publishes jobs onto the same topology).
REPLICA_KEYS = ("DATABASE_URL", "RABBITMQ_URL", "JOB_RETRY_DELAYS", "JOB_DELIVERY_LIMIT")


@pytest.fixture
def start_replica(
    clean: None, env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., UvicornServer]]:
    """start(name, **extra) -> a healthy replica on the module's database and vhost (the
    replica publishes `bot.move` with BOT_THINK_SECONDS as its delay: set it here)."""
    servers: list[UvicornServer] = []

    def start(name: str, **extra: str) -> UvicornServer:
        base = {key: env[key] for key in REPLICA_KEYS if key in env}
        server = UvicornServer(env={**base, **extra}, name=name, log_dir=tmp_path)
        servers.append(server)
        return server.start(timeout=budget(20))

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
            print(f"--- {server.name}:\n{server.log_path.read_text(errors='replace')[-2000:]}")
