"""The ORM writers of game rows (the embedded SQLite path, the worker fleet's jobs).

Rooms, seats, moves and new games here; who is connected in game/presence.py,
finished games in game/results.py, quick match in game/matchmaking.py.

Seats, moves and new games are decided by the planners in `game/rooms.py`;
this module reads the row, plans, and applies the write in one transaction only
if the room's `version` is still the one it read (compare-and-swap), so any
replica can take any move: of two racing writers one wins and the other
re-reads and gets the error the new state calls for. On PostgreSQL the replicas
take the same writes through `game/pgstore.py` instead, without the thread hop.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from . import rooms, rules
from .exceptions import GameError
from .models import (
    Connection,
    GameResult,
    Room,
)
from .rooms import (
    BOT_NAME,
    MARKS,
    Applied,
    RoomRow,
    Write,
    as_mark,
    result_key,
    token_hash,
)
from .rules import Mark

__all__ = ["BOT_NAME", "MARKS", "as_mark", "result_key", "token_hash"]

CAS_ATTEMPTS = 50


def row_of(room: Room) -> RoomRow:
    return RoomRow(
        code=room.code,
        version=room.version,
        board=room.board,
        opener=room.opener,
        x_name=room.x_name,
        x_token_hash=room.x_token_hash,
        x_bot=room.x_bot,
        o_name=room.o_name,
        o_token_hash=room.o_token_hash,
        o_bot=room.o_bot,
        rematch=room.rematch,
        games_started=room.games_started,
    )


def room_outcome(room: Room) -> tuple[rules.Board, rules.Outcome, bool]:
    """(board, outcome, both seats taken) for a room row."""
    row = row_of(room)
    return row.cells, row.outcome, row.seated


def read_row(code: str) -> RoomRow:
    return row_of(Room.objects.get(code=code))


def _apply(row: RoomRow, write: Write, *, channel_name: str | None) -> bool:
    """Apply `write` iff the room is still at `row.version` (and request list, for a
    rematch request); record the finished game and the connection's seat with it."""
    if write.changes or write.bump:
        rows = Room.objects.filter(code=row.code, version=row.version)
        if write.rematch_was is not None:
            rows = rows.filter(rematch=write.rematch_was)
        fields: dict[str, object] = dict(write.changes)
        if write.bump:
            fields["version"] = F("version") + 1
            fields["updated_at"] = timezone.now()
        if write.new_game:
            fields["games_started"] = F("games_started") + 1
        if rows.update(**fields) != 1:
            return False
    after = row.with_changes(write)
    if write.finished is not None:
        GameResult.objects.create(
            key=result_key(row.code, after.version),
            room_id=row.code,
            x_name=row.x_name,  # the planned-on row's players: a forfeit empties a seat
            o_name=row.o_name,
            x_bot=bool(row.x_bot),
            o_bot=bool(row.o_bot),
            winner=write.finished.winner or "",
        )
    if write.vacated is not None:
        Connection.objects.filter(room_id=row.code, mark=write.vacated).update(mark="")
    if write.seat is not None and channel_name is not None:
        Connection.objects.filter(channel_name=channel_name).update(mark=write.seat)
    return True


def act(
    code: str, plan: Callable[[RoomRow], Write | None], *, channel_name: str | None = None
) -> Applied | None:
    """Read the room, plan, compare-and-swap; again while a concurrent writer beats us.

    None when the planner finds nothing to do.
    """
    for _ in range(CAS_ATTEMPTS):
        with transaction.atomic():
            row = read_row(code)
            write = plan(row)
            if write is None:
                return None
            if _apply(row, write, channel_name=channel_name):
                return Applied(row.with_changes(write), write, row)
    raise RuntimeError("room kept changing under a writer; gave up")


def _applied(applied: Applied | None) -> Applied:
    assert applied is not None  # planners that never return None
    return applied


# --- seats, moves and games -----------------------------------------------------
# The ORM's own entry points, for tools and tests: they act for a mark without checking
# a seat token (the sockets' writes go through game/play.py, which checks it).


@dataclass(frozen=True, slots=True)
class SeatGrant:
    mark: Mark
    name: str
    token: str


def seat_join_applied(
    *, code: str, channel_name: str, held: Mark | None, name: str, token: str | None
) -> Applied:
    if held is not None:
        raise GameError("already_joined")
    new_token = secrets.token_urlsafe(24)
    return _applied(
        act(
            code,
            lambda row: rooms.plan_join(row, name=name, token=token, new_token=new_token),
            channel_name=channel_name,
        )
    )


def seat_join(
    *, code: str, channel_name: str, held: Mark | None, name: str, token: str | None
) -> SeatGrant:
    """Take the first empty seat (X, then O), or reclaim the seat a token was issued for."""
    applied = seat_join_applied(
        code=code, channel_name=channel_name, held=held, name=name, token=token
    )
    mark = applied.write.seat
    assert mark is not None
    return SeatGrant(mark=mark, name=applied.row.seat(mark).name, token=applied.write.token)


def bot_invite_applied(*, code: str, held: Mark | None, level: rules.Level = "perfect") -> Applied:
    if held is None:
        raise GameError("not_joined")
    return _applied(
        act(code, lambda row: rooms.plan_bot_invite(row, held=held, holder=None, level=level))
    )


def bot_invite(*, code: str, held: Mark | None, level: rules.Level = "perfect") -> Mark:
    """Seat a computer opponent in the empty seat; return its mark."""
    applied = bot_invite_applied(code=code, held=held, level=level)
    return next(m for m in MARKS if applied.row.seat(m).bot)


def move_applied(*, code: str, mark: Mark | None, cell: object, version: int | None) -> Applied:
    rooms.check_move_request(mark, cell)
    return _applied(
        act(
            code,
            lambda row: rooms.plan_move(row, mark=mark, holder=None, cell=cell, version=version),
        )
    )


def move_play(*, code: str, mark: Mark | None, cell: object, version: int | None) -> int:
    """Place `mark` on `cell`; return the new version. Errors in the protocol's order."""
    return move_applied(code=code, mark=mark, cell=cell, version=version).row.version


def rematch_applied(*, code: str, mark: Mark | None) -> Applied:
    if mark is None:
        raise GameError("not_joined")
    return _applied(act(code, lambda row: rooms.plan_rematch(row, mark=mark, holder=None)))


def rematch_request(*, code: str, mark: Mark | None) -> bool:
    """Record that `mark` wants a new game; start it once both asked. True if a game started."""
    return rematch_applied(code=code, mark=mark).write.new_game


def bot_play_applied(*, code: str, version: int) -> Applied | None:
    return act(code, lambda row: rooms.plan_bot_move(row, version=version))


def bot_play(*, code: str, version: int) -> int | None:
    """Let the room's computer opponent move if it is its turn at `version`.

    Returns the new version, or None when there is nothing to do (someone else
    already moved for it, the game changed, or no bot is seated). The version
    guard makes the move happen at most once per turn.
    """
    applied = bot_play_applied(code=code, version=version)
    return None if applied is None else applied.row.version


# --- the computer (the workers' sweep) ----------------------------------------


def rooms_awaiting_bot(*, older_than_seconds: float, limit: int = 500) -> list[tuple[str, int]]:
    """(room, version) where the computer should have moved by now."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    recent = timezone.now() - timedelta(hours=1)
    due = []
    candidates = Room.objects.filter(updated_at__lt=cutoff, updated_at__gte=recent).exclude(
        x_bot="", o_bot=""
    )
    for room in candidates[:limit]:
        row = row_of(room)
        if rooms.bot_due(row):
            due.append((row.code, row.version))
    return due
