"""The ORM writers of game rows (the embedded SQLite path, the worker fleet's jobs).

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

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from . import rooms, rules
from .exceptions import GameError
from .models import (
    Connection,
    GameResult,
    LeaderboardEntry,
    MatchTicket,
    Replica,
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
    seat_changes,
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
            x_name=after.x_name,
            o_name=after.o_name,
            x_bot=bool(after.x_bot),
            o_bot=bool(after.o_bot),
            winner=write.finished.winner or "",
        )
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
                return Applied(row.with_changes(write), write)
    raise RuntimeError("room kept changing under a writer; gave up")


def _applied(applied: Applied | None) -> Applied:
    assert applied is not None  # planners that never return None
    return applied


# --- connections and replicas -------------------------------------------------


def connection_open(*, code: str, channel_name: str, replica: str) -> bool:
    """Register a socket in its room (created if new); True if this created the room."""
    with transaction.atomic():
        _, created = Room.objects.get_or_create(code=code)
        Replica.objects.get_or_create(name=replica, defaults={"heartbeat_at": timezone.now()})
        Connection.objects.update_or_create(
            channel_name=channel_name, defaults={"room_id": code, "replica_id": replica}
        )
    return created


def connection_close(*, channel_name: str) -> bool:
    """Forget a connection (and its place in the quick-match line); True if it was known."""
    with transaction.atomic():
        match_cancel(channel_name=channel_name)
        deleted, _ = Connection.objects.filter(channel_name=channel_name).delete()
    return deleted > 0


def replica_beat(*, replica: str) -> None:
    Replica.objects.update_or_create(name=replica, defaults={"heartbeat_at": timezone.now()})


def replicas_sweep(*, timeout_seconds: float) -> list[str]:
    """Drop replicas that stopped beating, with their connections; return the rooms affected."""
    cutoff = timezone.now() - timedelta(seconds=timeout_seconds)
    with transaction.atomic():
        dead = Replica.objects.filter(heartbeat_at__lt=cutoff)
        rooms = list(
            Connection.objects.filter(replica__in=dead).values_list("room_id", flat=True).distinct()
        )
        dead.delete()
    return rooms


def replica_retire(*, replica: str) -> list[str]:
    """A replica shutting down removes itself and whatever connections it still lists."""
    with transaction.atomic():
        rooms = list(
            Connection.objects.filter(replica_id=replica)
            .values_list("room_id", flat=True)
            .distinct()
        )
        Replica.objects.filter(name=replica).delete()
    return rooms


# --- seats, moves and games -----------------------------------------------------


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
    return _applied(act(code, lambda row: rooms.plan_bot_invite(row, held=held, level=level)))


def bot_invite(*, code: str, held: Mark | None, level: rules.Level = "perfect") -> Mark:
    """Seat a computer opponent in the empty seat; return its mark."""
    applied = bot_invite_applied(code=code, held=held, level=level)
    return next(m for m in MARKS if applied.row.seat(m).bot)


def move_applied(*, code: str, mark: Mark | None, cell: object, version: int | None) -> Applied:
    rooms.check_move_request(mark, cell)
    return _applied(
        act(code, lambda row: rooms.plan_move(row, mark=mark, cell=cell, version=version))
    )


def move_play(*, code: str, mark: Mark | None, cell: object, version: int | None) -> int:
    """Place `mark` on `cell`; return the new version. Errors in the protocol's order."""
    return move_applied(code=code, mark=mark, cell=cell, version=version).row.version


def rematch_applied(*, code: str, mark: Mark | None) -> Applied:
    if mark is None:
        raise GameError("not_joined")
    return _applied(act(code, lambda row: rooms.plan_rematch(row, mark=mark)))


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


# --- results and leaderboard (the worker fleet) ---------------------------------


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


# --- quick match ---------------------------------------------------------------


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
