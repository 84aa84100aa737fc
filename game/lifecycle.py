"""Seats and rooms nobody uses any more, found for the worker fleet's sweep (game/jobs.py).

A seat whose holder has had no open socket for SEAT_OFFLINE_RELEASE_SECONDS is released
as if they had sent `leave` (a running game is forfeited); "away since" is when the last
socket holding it closed (`Room.<mark>_away_since`), or the room's last change when no
socket ever held it (a quick-match seat nobody came for). A room with no seat taken and
no socket, unchanged for EMPTY_ROOM_SECONDS, is removed; its finished games stay.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.db.models.functions import Coalesce
from django.utils import timezone

from .models import Connection, Room
from .rooms import MARKS
from .rules import Mark

log = logging.getLogger(__name__)


def seats_away(*, older_than_seconds: float, limit: int = 500) -> list[tuple[str, Mark, str]]:
    """(room, mark, the seat's token hash) of human seats with no socket on a live replica
    since before `older_than_seconds` ago."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=older_than_seconds)
    live = now - timedelta(seconds=settings.PRESENCE_TIMEOUT_SECONDS)
    found: list[tuple[str, Mark, str]] = []
    for mark in MARKS:
        prefix = mark.lower()
        held = Connection.objects.filter(
            room_id=OuterRef("code"), mark=mark, replica__heartbeat_at__gte=live
        )
        rows = (
            Room.objects.exclude(**{f"{prefix}_name": ""})
            .filter(**{f"{prefix}_bot": ""})
            .annotate(away=Coalesce(f"{prefix}_away_since", "updated_at"))
            .filter(away__lt=cutoff)
            .filter(~Exists(held))
            .values_list("code", f"{prefix}_token_hash")[:limit]
        )
        found += [(code, mark, digest) for code, digest in rows]
    return found


def rooms_remove_empty(*, older_than_seconds: float, limit: int = 500) -> int:
    """Remove rooms with both seats empty, no socket, unchanged since before
    `older_than_seconds` ago; their finished games stay (room set to null). A socket
    that connects meanwhile wins: its room is kept, or made again as it connects."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    anyone = Connection.objects.filter(room_id=OuterRef("code"))
    codes = list(
        Room.objects.filter(x_name="", o_name="", updated_at__lt=cutoff)
        .filter(~Exists(anyone))
        .values_list("code", flat=True)[:limit]
    )
    removed = 0
    for code in codes:
        try:
            with transaction.atomic():
                room = Room.objects.select_for_update().filter(code=code, x_name="", o_name="")
                if room.filter(~Exists(anyone)).exists():
                    removed += room.delete()[1].get("game.Room", 0)
        except IntegrityError:  # a socket came for it as it went: kept
            log.info("room %s not removed: a socket joined it", code)
    return removed
