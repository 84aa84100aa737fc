"""The only code that changes game rows.

Every write runs in `transaction.atomic()` and applies only if the room's
`version` is still the one it read (compare-and-swap), so any replica can take
any move: of two racing writers one wins and the other re-reads and gets the
error the new state calls for. Checks run in the order PROTOCOL.md gives.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from . import rules
from .exceptions import GameError
from .models import (
    EMPTY_BOARD_TEXT,
    Connection,
    GameResult,
    LeaderboardEntry,
    MatchTicket,
    Replica,
    Room,
)
from .rules import Mark

MARKS: tuple[Mark, Mark] = ("X", "O")
BOT_NAME = "Computer"
CAS_ATTEMPTS = 50

T = TypeVar("T")


def as_mark(value: str) -> Mark:
    """A mark read back from a row."""
    if value == "X":
        return "X"
    if value == "O":
        return "O"
    raise ValueError(f"not a mark: {value!r}")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Seat:
    name: str
    token_hash: str
    bot: str

    @property
    def empty(self) -> bool:
        return not self.name


def seat_of(room: Room, mark: Mark) -> Seat:
    if mark == "X":
        return Seat(room.x_name, room.x_token_hash, room.x_bot)
    return Seat(room.o_name, room.o_token_hash, room.o_bot)


def _seat_update(mark: Mark, *, name: str, token_hash: str = "", bot: str = "") -> dict[str, str]:
    prefix = mark.lower()
    return {f"{prefix}_name": name, f"{prefix}_token_hash": token_hash, f"{prefix}_bot": bot}


def room_outcome(room: Room) -> tuple[rules.Board, rules.Outcome, bool]:
    """(board, outcome, both seats taken) for a room row."""
    board = rules.board_from_str(room.board)
    seated = not seat_of(room, "X").empty and not seat_of(room, "O").empty
    return board, rules.outcome(board), seated


def _cas(room: Room, **changes: object) -> bool:
    """Apply `changes` and bump the version iff nobody changed the room since it was read."""
    updated = Room.objects.filter(code=room.code, version=room.version).update(
        version=F("version") + 1, updated_at=timezone.now(), **changes
    )
    return updated == 1


def _with_retries(attempt: Callable[[], T | None]) -> T:
    """Run one read-check-CAS attempt until it is not beaten by a concurrent writer."""
    for _ in range(CAS_ATTEMPTS):
        with transaction.atomic():
            result = attempt()
        if result is not None:
            return result
    raise RuntimeError("room kept changing under a writer; gave up")


# --- connections and replicas -------------------------------------------------


def connection_open(*, code: str, channel_name: str, replica: str) -> None:
    with transaction.atomic():
        Room.objects.get_or_create(code=code)
        Replica.objects.get_or_create(name=replica, defaults={"heartbeat_at": timezone.now()})
        Connection.objects.update_or_create(
            channel_name=channel_name, defaults={"room_id": code, "replica_id": replica}
        )


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


# --- seats --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeatGrant:
    mark: Mark
    name: str
    token: str


def seat_join(
    *, code: str, channel_name: str, held: Mark | None, name: str, token: str | None
) -> SeatGrant:
    """Take the first empty seat (X, then O), or reclaim the seat a token was issued for."""
    if held is not None:
        raise GameError("already_joined")

    def attempt() -> SeatGrant | None:
        room = Room.objects.get(code=code)
        if token is not None:
            digest = token_hash(token)
            for mark in MARKS:
                seat = seat_of(room, mark)
                if seat.token_hash and hmac.compare_digest(seat.token_hash, digest):
                    Connection.objects.filter(channel_name=channel_name).update(mark=mark)
                    return SeatGrant(mark=mark, name=seat.name, token=token)
            raise GameError("bad_token")
        free = [mark for mark in MARKS if seat_of(room, mark).empty]
        if not free:
            raise GameError("room_full")
        mark = free[0]
        new_token = secrets.token_urlsafe(24)
        if not _cas(room, **_seat_update(mark, name=name, token_hash=token_hash(new_token))):
            return None
        Connection.objects.filter(channel_name=channel_name).update(mark=mark)
        return SeatGrant(mark=mark, name=name, token=new_token)

    return _with_retries(attempt)


def bot_invite(*, code: str, held: Mark | None, level: rules.Level = "perfect") -> Mark:
    """Seat a computer opponent in the empty seat."""
    if held is None:
        raise GameError("not_joined")

    def attempt() -> Mark | None:
        room = Room.objects.get(code=code)
        free = [mark for mark in MARKS if seat_of(room, mark).empty]
        if not free:
            raise GameError("room_full")
        return free[0] if _cas(room, **_seat_update(free[0], name=BOT_NAME, bot=level)) else None

    return _with_retries(attempt)


# --- moves and games ----------------------------------------------------------


def _is_cell(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 8


def move_play(*, code: str, mark: Mark | None, cell: object, version: int | None) -> int:
    """Place `mark` on `cell`; return the new version. Errors in the protocol's order."""
    if mark is None:
        raise GameError("not_joined")
    if not _is_cell(cell):
        raise GameError("bad_cell")
    assert isinstance(cell, int)

    def attempt() -> int | None:
        room = Room.objects.get(code=code)
        board, outcome, seated = room_outcome(room)
        if outcome.status != "playing":
            raise GameError("game_over")
        if not seated:
            raise GameError("not_started")
        if version is not None and version != room.version:
            raise GameError("stale_version")
        if rules.to_move(board, as_mark(room.opener)) != mark:
            raise GameError("not_your_turn")
        if board[cell] is not None:
            raise GameError("cell_taken")
        after = rules.place(board, cell, mark)
        if not _cas(room, board=rules.board_to_str(after)):
            return None
        finished = rules.outcome(after)
        if finished.status != "playing":
            _result_record(room, version=room.version + 1, winner=finished.winner)
        return room.version + 1

    return _with_retries(attempt)


def result_key(code: str, version: int) -> str:
    """A finished game is named by its room and the version its last move made."""
    return f"{code}:{version}"


def _result_record(room: Room, *, version: int, winner: Mark | None) -> None:
    x, o = seat_of(room, "X"), seat_of(room, "O")
    GameResult.objects.create(
        key=result_key(room.code, version),
        room=room,
        x_name=x.name,
        o_name=o.name,
        x_bot=bool(x.bot),
        o_bot=bool(o.bot),
        winner=winner or "",
    )


def rematch_request(*, code: str, mark: Mark | None) -> bool:
    """Record that `mark` wants a new game; start it once both asked. True if a game started.

    A recorded request does not bump the version (only seat changes, moves and
    new games do); it is still guarded by the version and the request list.
    A computer opponent always agrees.
    """
    if mark is None:
        raise GameError("not_joined")

    def attempt() -> bool | None:
        room = Room.objects.get(code=code)
        _, outcome, _ = room_outcome(room)
        if outcome.status == "playing":
            raise GameError("not_over")
        asked = room.rematch if mark in room.rematch else room.rematch + mark
        opponent = rules.other(mark)
        if opponent in asked or seat_of(room, opponent).bot:
            started = _cas(
                room,
                board=EMPTY_BOARD_TEXT,
                opener=rules.other(as_mark(room.opener)),
                rematch="",
                games_started=F("games_started") + 1,
            )
            return True if started else None
        recorded = Room.objects.filter(
            code=code, version=room.version, rematch=room.rematch
        ).update(rematch=asked)
        return False if recorded else None

    return _with_retries(attempt)


def bot_play(*, code: str, version: int) -> int | None:
    """Let the room's computer opponent move if it is its turn at `version`.

    Returns the new version, or None when there is nothing to do (someone else
    already moved for it, the game changed, or no bot is seated). The version
    guard makes the move happen at most once per turn.
    """
    with transaction.atomic():
        room = Room.objects.get(code=code)
        if room.version != version:
            return None
        board, outcome, seated = room_outcome(room)
        if outcome.status != "playing" or not seated:
            return None
        mark = rules.to_move(board, as_mark(room.opener))
        level = seat_of(room, mark).bot
        if not level:
            return None
        cell = rules.best_move(board, mark, level="easy" if level == "easy" else "perfect")
    try:
        return move_play(code=code, mark=mark, cell=cell, version=version)
    except GameError:
        return None


# --- results and leaderboard (the worker fleet) ---------------------------------


def result_count(*, key: str) -> bool:
    """Apply one finished game to the leaderboard, once. True if it was counted now.

    The result row is locked and flipped to `counted` in the same transaction as
    the leaderboard update, so a redelivered job finds nothing to do.
    """
    with transaction.atomic():
        result = GameResult.objects.select_for_update().filter(key=key, counted=False).first()
        if result is None:
            return False
        players = [
            (name, _result_for(result.winner, mark))
            for mark, name, bot in (
                ("X", result.x_name, result.x_bot),
                ("O", result.o_name, result.o_bot),
            )
            if not bot  # the computer has no place on the leaderboard
        ]
        names = sorted({name for name, _ in players})  # a fixed lock order: no deadlocks
        for name in names:
            LeaderboardEntry.objects.get_or_create(name=name)
        entries = {
            entry.name: entry
            for entry in LeaderboardEntry.objects.select_for_update()
            .filter(name__in=names)
            .order_by("name")
        }
        for name, verdict in players:
            entry = entries[name]
            if verdict == "win":
                entry.wins += 1
                entry.streak += 1
                entry.best_streak = max(entry.best_streak, entry.streak)
            elif verdict == "loss":
                entry.losses += 1
                entry.streak = 0
            else:
                entry.draws += 1
                entry.streak = 0
        for entry in entries.values():
            entry.save()
        result.counted = True
        result.save(update_fields=["counted"])
    return True


def _result_for(winner: str, mark: str) -> str:
    if not winner:
        return "draw"
    return "win" if winner == mark else "loss"


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
    rooms = Room.objects.filter(updated_at__lt=cutoff, updated_at__gte=recent).exclude(
        x_bot="", o_bot=""
    )
    for room in rooms[:limit]:
        board, outcome, seated = room_outcome(room)
        if outcome.status == "playing" and seated:
            turn = rules.to_move(board, as_mark(room.opener))
            if seat_of(room, turn).bot:
                due.append((room.code, room.version))
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
                **_seat_update("X", name=first.name, token_hash=token_hash(tokens["X"])),
                **_seat_update("O", name=second.name, token_hash=token_hash(tokens["O"])),
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
                opponent=seat_of(ticket.room, rules.other(mark)).name,
            )
        )
    return pairings


def match_notified(*, tickets: list[int]) -> None:
    MatchTicket.objects.filter(id__in=tickets).update(notified=True, token="")


def match_unclaim(*, tickets: list[int]) -> None:
    """Claimed tickets whose `matched` could not be sent: the next pass tries again."""
    MatchTicket.objects.filter(id__in=tickets).update(notified=False)
