"""Throwaway PostgreSQL databases for tests that run real processes against them."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

POSTGRES_URL = os.environ.get("POSTGRES_TEST_URL", "postgres://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def throwaway_database(base_url: str = POSTGRES_URL) -> Iterator[str]:
    """A PostgreSQL database `tictac_test_<hex>`, dropped (sessions closed) afterwards."""
    from devtools.fleet import create_database, drop_database

    url = f"{base_url.rsplit('/', 1)[0]}/tictac_test_{secrets.token_hex(4)}"
    assert create_database(url)
    try:
        yield url
    finally:
        drop_database(url)
