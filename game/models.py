"""Rows behind a room. Only game/services.py writes them.

A room row holds one game at a time; derived facts (status, turn, winner) are
computed by game.rules from the board, never stored. `version` is the
compare-and-swap guard: every accepted seat change, move and new game bumps it
by exactly one, and a writer applies its change only if the version it read is
still current.
"""

from __future__ import annotations

from django.db import models

from .rooms import EMPTY_BOARD_TEXT


class Room(models.Model):
    code = models.CharField(primary_key=True, max_length=32)
    version = models.PositiveIntegerField(default=0)
    board = models.CharField(max_length=9, default=EMPTY_BOARD_TEXT)
    opener = models.CharField(max_length=1, default="X")
    x_name = models.CharField(max_length=32, blank=True, default="")
    o_name = models.CharField(max_length=32, blank=True, default="")
    # sha256 of the seat token handed out in `joined` (or quick match's `matched`); the
    # token itself is never stored.
    x_token_hash = models.CharField(max_length=64, blank=True, default="")
    o_token_hash = models.CharField(max_length=64, blank=True, default="")
    # A computer opponent's level ("perfect"/"easy") when the seat holds a bot.
    x_bot = models.CharField(max_length=16, blank=True, default="")
    o_bot = models.CharField(max_length=16, blank=True, default="")
    # Marks that asked for a new game, in asking order ("", "X", "O", "XO", "OX").
    rematch = models.CharField(max_length=2, blank=True, default="")
    games_started = models.PositiveIntegerField(default=1)
    # When a socket holding the seat last closed (or its replica was found dead): a
    # seat with no open socket is released SEAT_OFFLINE_RELEASE_SECONDS after this (or
    # after `updated_at` if no socket ever held it: a quick-match seat nobody took).
    x_away_since = models.DateTimeField(null=True, blank=True)
    o_away_since = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"room {self.code} v{self.version}"


class Replica(models.Model):
    """A running server process; its heartbeat vouches for its connections."""

    name = models.CharField(primary_key=True, max_length=100)
    heartbeat_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return self.name


class Connection(models.Model):
    """One open WebSocket: presence (online seats, spectator count) is counted from these."""

    channel_name = models.CharField(primary_key=True, max_length=200)
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="connections")
    replica = models.ForeignKey(Replica, on_delete=models.CASCADE, related_name="connections")
    mark = models.CharField(max_length=1, blank=True, default="")
    connected_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["room", "mark"])]

    def __str__(self) -> str:
        return f"{self.channel_name} in {self.room_id}"


class GameResult(models.Model):
    """One finished game, written in the same transaction as its last move.

    It doubles as the outbox of the `game.finished` job: the worker that applies
    it to the leaderboard flips `counted`, so a redelivered job counts nothing
    twice, and a job lost in transit is found again by the workers' sweep.
    """

    # "<room>:<version the finishing move made>" (rooms.result_key)
    key = models.CharField(primary_key=True, max_length=64)
    # Null once the room was removed (empty rooms go, their finished games stay).
    room = models.ForeignKey(
        Room, null=True, blank=True, on_delete=models.SET_NULL, related_name="results"
    )
    x_name = models.CharField(max_length=32)
    o_name = models.CharField(max_length=32)
    x_bot = models.BooleanField(default=False)
    o_bot = models.BooleanField(default=False)
    winner = models.CharField(max_length=1, blank=True, default="")  # "" = draw
    finished_at = models.DateTimeField(auto_now_add=True)
    counted = models.BooleanField(default=False, db_index=True)

    def __str__(self) -> str:
        return self.key


class LeaderboardEntry(models.Model):
    name = models.CharField(primary_key=True, max_length=32)
    wins = models.PositiveIntegerField(default=0)
    losses = models.PositiveIntegerField(default=0)
    draws = models.PositiveIntegerField(default=0)
    streak = models.PositiveIntegerField(default=0)  # current run of wins
    best_streak = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["-wins", "losses"])]

    def __str__(self) -> str:
        return f"{self.name} {self.wins}-{self.losses}-{self.draws}"


class MatchTicket(models.Model):
    """A player waiting for quick match; `id` order is arrival order."""

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(max_length=32)
    channel_name = models.CharField(max_length=200, db_index=True)
    room = models.ForeignKey(Room, null=True, blank=True, on_delete=models.SET_NULL)
    mark = models.CharField(max_length=1, blank=True, default="")
    # No seat token here: the one `matched` carries is derived from SECRET_KEY whenever the
    # player is told (game/matchmaking.py, `seat_token`); the room holds only its hash.
    notified = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["room", "id"]), models.Index(fields=["notified", "id"])]

    def __str__(self) -> str:
        return f"ticket {self.id} {self.name}"
