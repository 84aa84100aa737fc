"""Read-only queries that build the `state` message."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal, NotRequired, TypedDict

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from . import rules
from .models import Connection, LeaderboardEntry, Room
from .rooms import MARKS, Presence, RoomRow, as_mark
from .rules import Mark
from .services import row_of


class PlayerInfo(TypedDict):
    name: str
    online: bool
    bot: NotRequired[bool]  # addition to protocol 1: the seat holds a computer opponent


class StateMessage(TypedDict):
    type: Literal["state"]
    room: str
    version: int
    board: list[Mark | None]
    turn: Mark | None
    status: Literal["waiting", "playing", "won", "draw"]
    winner: Mark | None
    line: list[int] | None
    players: dict[str, PlayerInfo | None]
    spectators: int
    rematch: list[Mark]
    presence_at: int  # addition to protocol 1: when presence was counted (ms, server clock)


def presence_of(code: str) -> Presence:
    """Open connections per mark, counting only live replicas."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.PRESENCE_TIMEOUT_SECONDS)
    rows = dict(
        Connection.objects.filter(room_id=code, replica__heartbeat_at__gte=cutoff)
        .values_list("mark")
        .annotate(n=Count("pk"))
    )
    return Presence(rows.get("X", 0), rows.get("O", 0), rows.get("", 0), now.timestamp())


def state_of(row: RoomRow, presence: Presence) -> StateMessage:
    """The protocol's `state` of a room row with its presence."""
    board = row.cells
    outcome = rules.outcome(board)
    status: Literal["waiting", rules.Status] = (
        "waiting" if not row.seated and outcome.status == "playing" else outcome.status
    )
    players: dict[str, PlayerInfo | None] = {}
    for mark in MARKS:
        seat = row.seat(mark)
        if seat.empty:
            players[mark] = None
        elif seat.bot:
            players[mark] = {"name": seat.name, "online": True, "bot": True}
        else:
            players[mark] = {"name": seat.name, "online": presence.online(mark)}
    return {
        "type": "state",
        "room": row.code,
        "version": row.version,
        "board": list(board),
        "turn": rules.to_move(board, as_mark(row.opener)) if status == "playing" else None,
        "status": status,
        "winner": outcome.winner,
        "line": list(outcome.line) if outcome.line else None,
        "players": players,
        "spectators": presence.spectators,
        "rematch": [as_mark(mark) for mark in row.rematch],
        "presence_at": round(presence.asof * 1000),
    }


def room_view(code: str) -> tuple[RoomRow, Presence] | None:
    """The room row and its presence, read now."""
    room = Room.objects.filter(code=code).first()
    if room is None:
        return None
    return row_of(room), presence_of(code)


def room_versions(codes: list[str]) -> dict[str, int]:
    """The current version of each of these rooms (rooms that no longer exist left out)."""
    return dict(Room.objects.filter(code__in=codes).values_list("code", "version"))


def room_state(code: str) -> StateMessage | None:
    view = room_view(code)
    return None if view is None else state_of(*view)


def leaderboard(*, limit: int = 20) -> list[dict[str, object]]:
    """Most wins first; fewer losses break ties, then the name."""
    rows = LeaderboardEntry.objects.order_by("-wins", "losses", "name")[:limit]
    return [
        {
            "name": row.name,
            "wins": row.wins,
            "losses": row.losses,
            "draws": row.draws,
            "streak": row.streak,
            "best_streak": row.best_streak,
        }
        for row in rows
    ]
