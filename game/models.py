"""Rows behind a room. Only game/services.py writes them.

A room row holds one game at a time; derived facts (status, turn, winner) are
computed by game.rules from the board, never stored. `version` is the
compare-and-swap guard: every accepted seat change, move and new game bumps it
by exactly one, and a writer applies its change only if the version it read is
still current.
"""

from __future__ import annotations

from django.db import models

EMPTY_BOARD_TEXT = "." * 9


class Room(models.Model):
    code = models.CharField(primary_key=True, max_length=32)
    version = models.PositiveIntegerField(default=0)
    board = models.CharField(max_length=9, default=EMPTY_BOARD_TEXT)
    opener = models.CharField(max_length=1, default="X")
    x_name = models.CharField(max_length=32, blank=True, default="")
    o_name = models.CharField(max_length=32, blank=True, default="")
    # sha256 of the seat token handed out in `joined`; the token itself is never stored.
    x_token_hash = models.CharField(max_length=64, blank=True, default="")
    o_token_hash = models.CharField(max_length=64, blank=True, default="")
    # A computer opponent's level ("perfect"/"easy") when the seat holds a bot.
    x_bot = models.CharField(max_length=16, blank=True, default="")
    o_bot = models.CharField(max_length=16, blank=True, default="")
    # Marks that asked for a new game, in asking order ("", "X", "O", "XO", "OX").
    rematch = models.CharField(max_length=2, blank=True, default="")
    games_started = models.PositiveIntegerField(default=1)
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
