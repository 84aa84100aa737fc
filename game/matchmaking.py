"""Quick match: a line of waiting players, paired two by two in arrival order across
replicas, each pair seated in a fresh room with reserved seats.

A reserved seat's token is not random and not stored: it is derived from the server's
secret (`seat_token`: HMAC-SHA256 keyed by SECRET_KEY over the ticket, the room and the
mark), and the room keeps only its SHA-256, like every seat token. Whoever tells the
player (`match_claim`, after the pairing committed) derives it again, so a notification
sent again after a failed send carries the same token, and nothing in the database is
enough to take the seat.
"""

from __future__ import annotations

import base64
import hmac
import logging
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.utils.crypto import salted_hmac

from . import rules
from .models import MatchTicket, Room
from .rooms import RoomRow, as_mark, seat_changes, token_hash
from .rules import Mark
from .services import row_of

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Pairing:
    ticket: int
    channel_name: str
    room: str
    mark: Mark
    token: str
    opponent: str


SEAT_TOKEN_SALT = "game.matchmaking.seat_token"
SEAT_TOKEN_BYTES = 24  # as `secrets.token_urlsafe(24)`: 32 URL-safe characters


def seat_token(*, ticket: int, room: str, mark: Mark, secret: str | bytes | None = None) -> str:
    """The seat token of `ticket`, seated at `mark` in `room`: HMAC-SHA256 keyed by the
    server's secret (`secret`, default SECRET_KEY), URL-safe, the length and alphabet of
    the random tokens `join` hands out. Anyone with SECRET_KEY can derive it; nothing
    in the database can."""
    digest = salted_hmac(
        SEAT_TOKEN_SALT, f"match:{ticket}:{room}:{mark}", secret, algorithm="sha256"
    ).digest()
    return base64.urlsafe_b64encode(digest[:SEAT_TOKEN_BYTES]).decode("ascii")


def _told_token(*, ticket: int, room: RoomRow, mark: Mark) -> str:
    """The token to tell `ticket`'s player: the one whose hash its seat holds, derived with
    SECRET_KEY or, while a rotated-out key is still listed, SECRET_KEY_FALLBACKS (the
    pairer may have run before the rotation)."""
    stored = room.seat(mark).token_hash
    keys = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    for key in keys:
        token = seat_token(ticket=ticket, room=room.code, mark=mark, secret=key)
        if hmac.compare_digest(token_hash(token), stored):
            return token
    log.error(
        "quick match: no SECRET_KEY derives the seat token of ticket %s (room %s, %s); "
        "do the pairer and the notifier share SECRET_KEY?",
        ticket,
        room.code,
        mark,
    )
    return seat_token(ticket=ticket, room=room.code, mark=mark)


MATCH_LINE_LOCK = 0x7A1C7AC  # advisory lock key of the quick-match line
MATCH_PAIR_LOCK = 0x7A1C7AD  # advisory lock key taken by whoever pairs the line


def _take_turns(key: int) -> None:
    """Hold PostgreSQL advisory lock `key` until the transaction ends (SQLite already
    runs one writer at a time)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def match_request(*, name: str, channel_name: str) -> int:
    """A player asks to be paired; the ticket's id is its place in the line."""
    with transaction.atomic():
        # Serialize ticket inserts so ids commit in id order: a pairer then never
        # sees ticket n+1 before ticket n and the line keeps arrival order.
        _take_turns(MATCH_LINE_LOCK)
        waiting = MatchTicket.objects.filter(channel_name=channel_name, room__isnull=True).first()
        if waiting is not None:
            return waiting.id
        return MatchTicket.objects.create(name=name, channel_name=channel_name).id


def match_cancel(*, channel_name: str) -> int:
    deleted, _ = MatchTicket.objects.filter(channel_name=channel_name, room__isnull=True).delete()
    return deleted


def match_pair(*, limit: int = 500) -> int:
    """Pair waiting tickets two by two in arrival order, each pair in a new room.

    Several workers may run this at once. Each pair is made under one advisory
    lock on PostgreSQL, so pairers take turns: row locks with `skip_locked` alone
    interleave (one pairer locks ticket 1, another skips it and locks 2, and the
    line pairs as (1, 3), (2, 4)). The oldest two are locked plainly, so a ticket
    being cancelled is waited for, not skipped. Returns the number of rooms made.
    """
    made = 0
    while made < limit:
        with transaction.atomic():
            _take_turns(MATCH_PAIR_LOCK)
            pair = list(
                MatchTicket.objects.select_for_update().filter(room__isnull=True).order_by("id")[:2]
            )
            if len(pair) < 2:
                return made
            first, second = pair
            code = f"qm-{secrets.token_hex(6)}"
            x = seat_token(ticket=first.id, room=code, mark="X")
            o = seat_token(ticket=second.id, room=code, mark="O")
            room = Room.objects.create(
                code=code,
                version=2,  # both seats taken
                **seat_changes("X", name=first.name, token_hash=token_hash(x)),
                **seat_changes("O", name=second.name, token_hash=token_hash(o)),
            )
            for ticket, mark in ((first, "X"), (second, "O")):
                ticket.room = room
                ticket.mark = mark
                ticket.save(update_fields=["room", "mark"])
            made += 1
    return made


def match_claim(*, limit: int = 500) -> list[Pairing]:
    """Paired tickets whose player has not been told yet, claimed by this caller alone.

    The rows are locked (`skip_locked`: concurrent claimers get disjoint sets) and
    flagged `notified` in one transaction, so each player is told by one claimer
    only; the caller sends after the commit, and hands back what it could not send
    (`match_unclaim`). Each seat token is derived again here (`seat_token`), never
    read: a ticket claimed again after a failed send gets the same token.
    """
    with transaction.atomic():
        tickets = list(
            MatchTicket.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(room__isnull=False, notified=False)
            .select_related("room")
            .order_by("id")[:limit]
        )
        MatchTicket.objects.filter(id__in=[t.id for t in tickets]).update(notified=True)
    pairings = []
    for ticket in tickets:
        assert ticket.room is not None
        mark = as_mark(ticket.mark)
        room = row_of(ticket.room)
        pairings.append(
            Pairing(
                ticket=ticket.id,
                channel_name=ticket.channel_name,
                room=room.code,
                mark=mark,
                token=_told_token(ticket=ticket.id, room=room, mark=mark),
                opponent=room.seat(rules.other(mark)).name,
            )
        )
    return pairings


def match_unclaim(*, tickets: list[int]) -> None:
    """Claimed tickets whose `matched` could not be sent: the next pass tries again."""
    MatchTicket.objects.filter(id__in=tickets).update(notified=False)
