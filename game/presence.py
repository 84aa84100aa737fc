"""Who is connected: sockets per room and the replicas that vouch for them (ORM; the
replicas' connect and close take game/pgstore.py's one-statement path on PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from .matchmaking import match_cancel
from .models import Connection, Replica, Room
from .rooms import MARKS


def connection_open(*, code: str, channel_name: str, replica: str) -> bool:
    """Register a socket in its room (created if new); True if this created the room."""
    with transaction.atomic():
        _, created = Room.objects.get_or_create(code=code)
        Replica.objects.get_or_create(name=replica, defaults={"heartbeat_at": timezone.now()})
        Connection.objects.update_or_create(
            channel_name=channel_name, defaults={"room_id": code, "replica_id": replica}
        )
    return created


def _seats_away(connections: QuerySet[Connection]) -> None:
    """The seats these connections held are away from now (game/lifecycle.py)."""
    now = timezone.now()
    for mark in MARKS:
        rooms = connections.filter(mark=mark).values("room_id")
        Room.objects.filter(code__in=rooms).update(**{f"{mark.lower()}_away_since": now})


def connection_close(*, channel_name: str) -> bool:
    """Forget a connection (and its place in the quick-match line); True if it was known."""
    with transaction.atomic():
        match_cancel(channel_name=channel_name)
        closing = Connection.objects.filter(channel_name=channel_name)
        _seats_away(closing)
        deleted, _ = closing.delete()
    return deleted > 0


def replica_beat(*, replica: str) -> None:
    Replica.objects.update_or_create(name=replica, defaults={"heartbeat_at": timezone.now()})


def replicas_sweep(*, timeout_seconds: float) -> list[str]:
    """Drop replicas that stopped beating, with their connections; return the rooms affected."""
    cutoff = timezone.now() - timedelta(seconds=timeout_seconds)
    with transaction.atomic():
        dead = Replica.objects.filter(heartbeat_at__lt=cutoff)
        orphans = Connection.objects.filter(replica__in=dead)
        rooms = list(orphans.values_list("room_id", flat=True).distinct())
        _seats_away(orphans)
        dead.delete()
    return rooms


def _drop_replicas(names: list[str]) -> list[str]:
    """Remove these replicas and their connections (in the caller's transaction); the
    rooms that had connections of theirs."""
    orphans = Connection.objects.filter(replica_id__in=names)
    rooms = list(orphans.values_list("room_id", flat=True).distinct())
    _seats_away(orphans)
    Replica.objects.filter(name__in=names).delete()
    return rooms


def replica_retire(*, replica: str) -> list[str]:
    """A replica shutting down removes itself and whatever connections it still lists."""
    with transaction.atomic():
        return _drop_replicas([replica])


def replica_retire_predecessors(*, name: str, generation: str) -> list[str]:
    """Remove the replicas of an earlier start under `name` (ids `<name>.<generation>.…`,
    realtime/replica.py) and their connections; return the rooms affected."""
    with transaction.atomic():
        gone = [
            replica
            for replica in Replica.objects.filter(name__startswith=f"{name}.").values_list(
                "name", flat=True
            )
            if replica.rsplit(".", 3)[0] == name and replica.rsplit(".", 3)[1] != generation
        ]
        return _drop_replicas(gone)
