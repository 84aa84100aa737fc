"""Fixtures of the worker suites: a migrated PostgreSQL database per module (the broker's
vhost is tests/conftest.py's `rabbitmq_url`), emptied before each test."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from devtools.databases import throwaway_database
from tests.support.workers import migrate, purge_job_queues, reset_tables


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
