"""Shared fixtures. The database is SQLite unless DATABASE_URL says PostgreSQL.

RabbitMQ: every suite works in a throwaway vhost of its own (tests/support/broker.py),
never in the broker's `/`: `rabbitmq_url` per module for the suites that start layers,
replicas, fleets or workers; the whole session's settings (and the processes it starts)
when RABBITMQ_URL is set (`make test-rabbitmq`).
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test.utils import override_settings

from devtools.databases import throwaway_database
from tests.support.broker import throwaway_vhost
from tests.support.connections import OpenClient, opened_clients
from tests.support.server import UvicornServer


@pytest.fixture
def on_postgres() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture(autouse=True)
def _fresh_channel_layer() -> Iterator[None]:
    """The in-memory layer keeps queues per event loop; start every test empty."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def server_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a real replica: its own SQLite file."""
    return {"DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3"}


@pytest.fixture
def replica(server_env: dict[str, str], tmp_path: Path) -> Iterator[UvicornServer]:
    """One real uvicorn process on a free port, migrated and healthy."""
    srv = UvicornServer(env=server_env, name="web-1", log_dir=tmp_path)
    srv.migrate()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
async def clients() -> AsyncIterator[OpenClient]:
    """open(url, label) -> Connection; every client is closed when the test ends."""
    async with opened_clients() as open_client:
        yield open_client


@pytest.fixture
def database_url() -> Iterator[str]:
    """A throwaway PostgreSQL database for real processes (fleets, workers)."""
    with throwaway_database() as url:
        yield url


@pytest.fixture(scope="module")
def rabbitmq_url() -> Iterator[str]:
    """A throwaway RabbitMQ vhost (its URL) for the module's layers, replicas, fleets
    and workers: the job queues and the group exchange have fixed names, so a vhost of
    its own keeps other suites and leftovers of earlier runs away. Deleted afterwards."""
    with throwaway_vhost() as url:
        yield url


@pytest.fixture(scope="session", autouse=True)
def _session_rabbitmq_vhost() -> Iterator[None]:
    """With RABBITMQ_URL set (`make test-rabbitmq`), the session runs in a throwaway vhost
    of that broker: the channel layer, the jobs and every process a test starts."""
    base: str = django_settings.RABBITMQ_URL
    if not base:
        yield
        return
    from game import jobs

    with throwaway_vhost(base) as url, pytest.MonkeyPatch.context() as patch:
        layers: dict[str, dict[str, Any]] = copy.deepcopy(django_settings.CHANNEL_LAYERS)
        layers["default"]["CONFIG"] = {**layers["default"]["CONFIG"], "url": url}
        patch.setenv("RABBITMQ_URL", url)
        jobs.publisher.cache_clear()
        try:
            with override_settings(RABBITMQ_URL=url, CHANNEL_LAYERS=layers):
                yield
        finally:
            jobs.publisher.cache_clear()
