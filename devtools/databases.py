"""PostgreSQL databases for the local fleet, the tests and the benchmark: created when
missing, thrown away after a run. SQLite URLs need nothing. psycopg is imported only when
a PostgreSQL URL is given (the Locust venv has none and never passes one)."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit, urlunsplit

log = logging.getLogger(__name__)

POSTGRES_SCHEMES = ("postgres", "postgresql", "pgsql", "psql", "postgis")
POSTGRES_URL = os.environ.get("POSTGRES_TEST_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def _postgres_parts(url: str) -> tuple[str, str] | None:
    """(admin conninfo URL on the `postgres` database, database name), or None if not PostgreSQL."""
    parts = urlsplit(url)
    if parts.scheme not in POSTGRES_SCHEMES:
        return None
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ValueError(f"DATABASE_URL names no database: {url}")
    admin = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    return admin, name


def create_database(url: str) -> bool:
    """Create the PostgreSQL database `url` names unless it exists. True if created.

    Other databases (SQLite) need nothing and return False.
    """
    parsed = _postgres_parts(url)
    if parsed is None:
        return False
    import psycopg
    from psycopg import errors, sql

    admin, name = parsed
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except errors.DuplicateDatabase:  # created concurrently
            return False
    log.info("created database %s", name)
    return True


def drop_database(url: str) -> None:
    """Drop the PostgreSQL database `url` names, closing its sessions."""
    parsed = _postgres_parts(url)
    if parsed is None:
        return
    import psycopg
    from psycopg import sql

    admin, name = parsed
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextlib.contextmanager
def throwaway_database(base_url: str = POSTGRES_URL, prefix: str = "tictac_test") -> Iterator[str]:
    """A new PostgreSQL database `<prefix>_<hex>` next to `base_url`'s, dropped (sessions
    closed) afterwards."""
    url = f"{base_url.rsplit('/', 1)[0]}/{prefix}_{secrets.token_hex(4)}"
    if not create_database(url):
        raise RuntimeError(f"{url} already existed")
    try:
        yield url
    finally:
        drop_database(url)


def redact(url: str) -> str:
    """`url` with its password, if any, as ***."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
