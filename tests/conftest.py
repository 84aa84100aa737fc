"""Shared fixtures. The database is SQLite unless DATABASE_URL says PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from devtools.databases import throwaway_database
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
def database_url() -> Iterator[str]:
    """A throwaway PostgreSQL database for real processes (fleets, workers)."""
    with throwaway_database() as url:
        yield url
