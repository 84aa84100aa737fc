"""Read-only queries that build the `state` message."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from . import rules
from .models import Connection, LeaderboardEntry, Room
from .protocol import PlayerInfo, StateMessage
from .services import MARKS, as_mark, room_outcome, seat_of


def presence_counts(code: str) -> dict[str, int]:
    """Open connections per mark ("" = spectator), counting only live replicas."""
    cutoff = timezone.now() - timedelta(seconds=settings.PRESENCE_TIMEOUT_SECONDS)
    rows = (
        Connection.objects.filter(room_id=code, replica__heartbeat_at__gte=cutoff)
        .values_list("mark")
        .annotate(n=Count("pk"))
    )
    return dict(rows)


def state_of(room: Room, counts: dict[str, int]) -> StateMessage:
    board, outcome, seated = room_outcome(room)
    status: Literal["waiting", rules.Status] = (
        "waiting" if not seated and outcome.status == "playing" else outcome.status
    )
    players: dict[str, PlayerInfo | None] = {}
    for mark in MARKS:
        seat = seat_of(room, mark)
        if seat.empty:
            players[mark] = None
        elif seat.bot:
            players[mark] = {"name": seat.name, "online": True, "bot": True}
        else:
            players[mark] = {"name": seat.name, "online": counts.get(mark, 0) > 0}
    return {
        "type": "state",
        "room": room.code,
        "version": room.version,
        "board": list(board),
        "turn": rules.to_move(board, as_mark(room.opener)) if status == "playing" else None,
        "status": status,
        "winner": outcome.winner,
        "line": list(outcome.line) if outcome.line else None,
        "players": players,
        "spectators": counts.get("", 0),
        "rematch": [as_mark(mark) for mark in room.rematch],
    }


def room_state(code: str) -> StateMessage | None:
    room = Room.objects.filter(code=code).first()
    if room is None:
        return None
    return state_of(room, presence_counts(code))


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
