"""The async side's writes and reads of rooms: what the consumer and the jobs call.

On PostgreSQL a write plans on the row the caller already holds (a replica's
copy from the last `state` it saw) and costs one statement: the
compare-and-swap `UPDATE ... RETURNING` of `game/pgstore.py`. Only when the
copy is behind (the swap misses, or the plan says no) is the row read again,
so every error a client gets was decided on the current row, in the
protocol's order. On any other database (the embedded SQLite default) the
ORM services do the same read-plan-swap in Django's database thread.
"""

from __future__ import annotations

import asyncio
import secrets
import weakref
from collections.abc import Callable
from typing import cast

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection

from . import presence, results, rooms, rules, services
from .exceptions import GameError
from .pgstore import PgStore, conninfo
from .rooms import Applied, Presence, RoomRow, Write
from .rules import Mark
from .selectors import room_versions, room_view

Plan = Callable[[RoomRow], Write | None]

_stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, PgStore] = weakref.WeakKeyDictionary()


def store() -> PgStore | None:
    """This event loop's PostgreSQL store, or None off PostgreSQL."""
    if connection.vendor != "postgresql":
        return None
    loop = asyncio.get_running_loop()
    found = _stores.get(loop)
    if found is None:
        found = _stores[loop] = PgStore(conninfo(), max_size=settings.DATABASE_POOL_SIZE)
    return found


async def close_store() -> None:
    """Close this event loop's pool (shutdown, end of a test)."""
    found = _stores.pop(asyncio.get_running_loop(), None)
    if found is not None:
        await found.close()


async def view(code: str) -> tuple[RoomRow, Presence] | None:
    """The room and its presence, read now."""
    pg = store()
    if pg is not None:
        return await pg.view(code)
    return cast(tuple[RoomRow, Presence] | None, await database_sync_to_async(room_view)(code))


async def act(
    code: str,
    plan: Plan,
    *,
    known: RoomRow | None = None,
    channel_name: str | None = None,
    via: PgStore | None = None,
) -> Applied | None:
    """Plan on `known` (or a fresh read), compare-and-swap, re-read and re-plan on a miss.

    None when the current row leaves the planner nothing to do. `via`: another
    store than this loop's (tests race several, as several replicas would).
    """
    pg = via or store()
    if pg is None:
        applied = await database_sync_to_async(services.act)(code, plan, channel_name=channel_name)
        return cast(Applied | None, applied)
    row, fresh = known, False
    for _ in range(services.CAS_ATTEMPTS):
        if row is None:
            row, fresh = await pg.read(code), True
            if row is None:
                raise LookupError(f"no room {code!r}")
        try:
            write = plan(row)
        except GameError:
            if fresh:
                raise
            row = None  # our copy may be behind: decide on the current row
            continue
        if write is None:
            if fresh:
                return None
            row = None
            continue
        after = await pg.apply(row, write, channel_name=channel_name)
        if after is not None:
            return Applied(after, write, row)
        row = None  # somebody wrote first
    raise RuntimeError("room kept changing under a writer; gave up")


def _sure(applied: Applied | None) -> Applied:
    assert applied is not None  # planners that never return None
    return applied


async def move(
    *,
    code: str,
    mark: Mark | None,
    holder: str | None,
    cell: object,
    version: int | None,
    known: RoomRow | None,
    via: PgStore | None = None,
) -> Applied:
    """`holder`: the hash of the token the socket holds its seat by (rooms.check_holder)."""
    rooms.check_move_request(mark, cell)  # not_joined, bad_cell: no room needed
    return _sure(
        await act(
            code,
            lambda row: rooms.plan_move(row, mark=mark, holder=holder, cell=cell, version=version),
            known=known,
            via=via,
        )
    )


async def join(
    *, code: str, channel_name: str, held: Mark | None, name: str, token: str | None
) -> Applied:
    """Take the first empty seat, or reclaim a seat by its token (always on a fresh row:
    replicas' copies carry no token hashes)."""
    if held is not None:
        raise GameError("already_joined")
    new_token = secrets.token_urlsafe(24)
    return _sure(
        await act(
            code,
            lambda row: rooms.plan_join(row, name=name, token=token, new_token=new_token),
            channel_name=channel_name,
        )
    )


async def invite_bot(
    *, code: str, held: Mark | None, holder: str | None, level: rules.Level, known: RoomRow | None
) -> Applied:
    if held is None:
        raise GameError("not_joined")
    return _sure(
        await act(
            code,
            lambda row: rooms.plan_bot_invite(row, held=held, holder=holder, level=level),
            known=known,
        )
    )


async def rematch(
    *, code: str, mark: Mark | None, holder: str | None, known: RoomRow | None
) -> Applied:
    if mark is None:
        raise GameError("not_joined")
    return _sure(
        await act(code, lambda row: rooms.plan_rematch(row, mark=mark, holder=holder), known=known)
    )


async def leave(
    *, code: str, mark: Mark | None, holder: str | None, known: RoomRow | None
) -> Applied:
    """The socket gives up its seat (forfeiting a running game)."""
    if mark is None:
        raise GameError("not_joined")
    return _sure(
        await act(code, lambda row: rooms.plan_leave(row, mark=mark, holder=holder), known=known)
    )


async def release(*, code: str, mark: Mark, holder: str) -> Applied | None:
    """The workers release a seat whose holder stayed away (as `leave` would), unless the
    seat changed hands since they looked (None then)."""

    def plan(row: RoomRow) -> Write | None:
        try:
            return rooms.plan_leave(row, mark=mark, holder=holder)
        except GameError:
            return None

    return await act(code, plan)


async def bot_move(*, code: str, version: int, known: RoomRow | None) -> Applied | None:
    """The computer's move for the turn at `version`, at most once (compare-and-swap)."""
    return await act(code, lambda row: rooms.plan_bot_move(row, version=version), known=known)


async def versions(codes: list[str]) -> dict[str, int]:
    """The current version of each of these rooms (rooms that no longer exist left out)."""
    pg = store()
    if pg is not None:
        return await pg.versions(codes)
    return cast(dict[str, int], await database_sync_to_async(room_versions)(codes))


async def count_result(*, key: str) -> bool:
    """A finished game onto the leaderboard, once (the `game.finished` job)."""
    pg = store()
    if pg is not None:
        return await pg.count_result(key=key)
    return bool(await database_sync_to_async(results.result_count)(key=key))


def _open_orm(code: str, channel_name: str, replica: str) -> tuple[RoomRow, Presence, bool]:
    created = presence.connection_open(code=code, channel_name=channel_name, replica=replica)
    found = room_view(code)
    assert found is not None
    return (*found, created)


async def open_connection(
    *, code: str, channel_name: str, replica: str
) -> tuple[RoomRow, Presence, bool]:
    """Register a socket in its room (created if new): the room, its presence, and
    whether this socket created it."""
    pg = store()
    if pg is not None:
        return await pg.open_connection(code=code, channel_name=channel_name, replica=replica)
    return cast(
        tuple[RoomRow, Presence, bool],
        await database_sync_to_async(_open_orm)(code, channel_name, replica),
    )


async def close_connection(*, channel_name: str) -> bool:
    """Forget a socket (and its place in the quick-match line); True if it was known."""
    pg = store()
    if pg is not None:
        return await pg.close_connection(channel_name=channel_name)
    closed = await database_sync_to_async(presence.connection_close)(channel_name=channel_name)
    return bool(closed)
