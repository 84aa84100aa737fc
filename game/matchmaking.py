"""Quick match: a line of waiting players, paired two by two in arrival order across
replicas, each pair seated in a fresh room with reserved seats."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.db import connection, transaction

from . import rules
from .models import MatchTicket, Room
from .rooms import as_mark, seat_changes, token_hash
from .rules import Mark
from .services import row_of


@dataclass(frozen=True, slots=True)
class Pairing:
    ticket: int
    channel_name: str
    room: str
    mark: Mark
    token: str
    opponent: str


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
            tokens = {"X": secrets.token_urlsafe(24), "O": secrets.token_urlsafe(24)}
            room = Room.objects.create(
                code=f"qm-{secrets.token_hex(6)}",
                version=2,  # both seats taken
                **seat_changes("X", name=first.name, token_hash=token_hash(tokens["X"])),
                **seat_changes("O", name=second.name, token_hash=token_hash(tokens["O"])),
            )
            for ticket, mark in ((first, "X"), (second, "O")):
                ticket.room = room
                ticket.mark = mark
                ticket.token = tokens[mark]
                ticket.save(update_fields=["room", "mark", "token"])
            made += 1
    return made


def match_claim(*, limit: int = 500) -> list[Pairing]:
    """Paired tickets whose player has not been told yet, claimed by this caller alone.

    The rows are locked (`skip_locked`: concurrent claimers get disjoint sets) and
    flagged `notified` in one transaction, so each player is told by one claimer
    only; the caller sends after the commit and then clears the tokens
    (`match_notified`), or hands back what it could not send (`match_unclaim`).
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
        pairings.append(
            Pairing(
                ticket=ticket.id,
                channel_name=ticket.channel_name,
                room=ticket.room.code,
                mark=mark,
                token=ticket.token,
                opponent=row_of(ticket.room).seat(rules.other(mark)).name,
            )
        )
    return pairings


def match_notified(*, tickets: list[int]) -> None:
    MatchTicket.objects.filter(id__in=tickets).update(notified=True, token="")


def match_unclaim(*, tickets: list[int]) -> None:
    """Claimed tickets whose `matched` could not be sent: the next pass tries again."""
    MatchTicket.objects.filter(id__in=tickets).update(notified=False)
