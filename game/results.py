"""Finished games onto the leaderboard, once each (the worker fleet's `game.finished`
job; on PostgreSQL the same in one statement: PgStore.count_result)."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from .models import GameResult, LeaderboardEntry


def result_count(*, key: str) -> bool:
    """Apply one finished game to the leaderboard, once. True if it was counted now.

    The result row is locked and flipped to `counted` in the same transaction as
    the leaderboard update, so a redelivered job finds nothing to do. (On
    PostgreSQL the async side does the same in one statement: PgStore.count_result.)
    """
    with transaction.atomic():
        result = GameResult.objects.select_for_update().filter(key=key, counted=False).first()
        if result is None:
            return False
        rows = tally(result.winner, [(result.x_name, result.x_bot), (result.o_name, result.o_bot)])
        for name in sorted(rows):  # a fixed lock order: no deadlocks
            LeaderboardEntry.objects.get_or_create(name=name)
        entries = LeaderboardEntry.objects.select_for_update().filter(name__in=rows)
        for entry in entries.order_by("name"):
            wins, losses, draws = rows[entry.name]
            entry.wins += wins
            entry.losses += losses
            entry.draws += draws
            entry.streak = entry.streak + wins if losses + draws == 0 else 0
            entry.best_streak = max(entry.best_streak, entry.streak)
            entry.save()
        result.counted = True
        result.save(update_fields=["counted"])
    return True


def tally(winner: str, players: list[tuple[str, bool]]) -> dict[str, tuple[int, int, int]]:
    """name -> (wins, losses, draws) one game adds; X first, the computer left out.

    A game against yourself (both seats under one name) adds a win and a loss
    and ends the streak.
    """
    rows: dict[str, tuple[int, int, int]] = {}
    for mark, (name, bot) in zip("XO", players, strict=True):
        if bot:
            continue
        wins, losses, draws = rows.get(name, (0, 0, 0))
        if not winner:
            draws += 1
        elif winner == mark:
            wins += 1
        else:
            losses += 1
        rows[name] = (wins, losses, draws)
    return rows


def results_uncounted(*, older_than_seconds: float, limit: int = 500) -> list[str]:
    """Finished games no worker has counted yet (their job was lost or is late)."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    return list(
        GameResult.objects.filter(counted=False, finished_at__lt=cutoff)
        .order_by("finished_at")
        .values_list("key", flat=True)[:limit]
    )
