"""Seats, moves and new games as pure decisions over a room row. No Django, no I/O.

A writer reads (or already holds) a `RoomRow`, asks a planner here what the
action would change, and applies the returned `Write` only if the room's
`version` is still the one it planned on (compare-and-swap). A planner raises
the protocol's `GameError` in the order docs/protocol.md gives; a writer that
planned on a row it did not just read (a replica's cached copy) re-reads
before it reports an error, so errors always come from the current row.

Both writers use these planners: the ORM services (`game/services.py`, the
embedded SQLite path) and the async PostgreSQL store (`game/pgstore.py`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, replace
from typing import Any

from . import rules
from .exceptions import GameError
from .rules import Mark

MARKS: tuple[Mark, Mark] = ("X", "O")
ROOM_CODE = r"[A-Za-z0-9_-]{1,32}"  # docs/protocol.md, "Transport"
ROOM_CODE_RE = re.compile(rf"^{ROOM_CODE}$")
BOT_NAME = "Computer"
EMPTY_BOARD_TEXT = "." * 9

# The columns a write may set, in the order `RoomRow` and the stores list them.
COLUMNS = (
    "code",
    "version",
    "board",
    "opener",
    "x_name",
    "x_token_hash",
    "x_bot",
    "o_name",
    "o_token_hash",
    "o_bot",
    "rematch",
    "games_started",
)


def valid_room_code(code: str) -> bool:
    return ROOM_CODE_RE.fullmatch(code) is not None


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


@dataclass(frozen=True, slots=True)
class RoomRow:
    """One room as stored: the columns of `game.models.Room` that the game reads."""

    code: str
    version: int = 0
    board: str = EMPTY_BOARD_TEXT
    opener: str = "X"
    x_name: str = ""
    x_token_hash: str = ""
    x_bot: str = ""
    o_name: str = ""
    o_token_hash: str = ""
    o_bot: str = ""
    rematch: str = ""
    games_started: int = 1

    def seat(self, mark: Mark) -> Seat:
        if mark == "X":
            return Seat(self.x_name, self.x_token_hash, self.x_bot)
        return Seat(self.o_name, self.o_token_hash, self.o_bot)

    @property
    def cells(self) -> rules.Board:
        return rules.board_from_str(self.board)

    @property
    def outcome(self) -> rules.Outcome:
        return rules.outcome(self.cells)

    @property
    def seated(self) -> bool:
        return bool(self.x_name and self.o_name)

    @property
    def turn(self) -> Mark:
        return rules.to_move(self.cells, as_mark(self.opener))

    def public(self) -> tuple[object, ...]:
        """The row without its seats' token hashes: what replicas pass each other with a
        `state` (`seats()` rides along separately, so a replica of the release before,
        which unpacks exactly these ten values, still reads it)."""
        return (
            self.code, self.version, self.board, self.opener, self.x_name, self.x_bot,
            self.o_name, self.o_bot, self.rematch, self.games_started,
        )  # fmt: skip

    def seats(self) -> tuple[str, str]:
        """The seats' token hashes (a hash cannot take a seat; only its token can): with
        them a replica checks that a socket still holds its seat without a read."""
        return (self.x_token_hash, self.o_token_hash)

    @classmethod
    def from_public(
        cls, values: list[object] | tuple[object, ...], seats: object = None
    ) -> RoomRow:
        """The row `public()` and `seats()` gave; without `seats` (a sender of the release
        before) the hashes are unknown and a seat holder's write re-reads the room."""
        code, version, board, opener, x_name, x_bot, o_name, o_bot, rematch, games = values
        x_hash, o_hash = (str(h) for h in seats) if isinstance(seats, list | tuple) else ("", "")
        return cls(
            code=str(code), version=int(str(version)), board=str(board), opener=str(opener),
            x_name=str(x_name), x_token_hash=x_hash, x_bot=str(x_bot), o_name=str(o_name),
            o_token_hash=o_hash, o_bot=str(o_bot), rematch=str(rematch),
            games_started=int(str(games)),
        )  # fmt: skip

    def with_changes(self, write: Write) -> RoomRow:
        """The row as `write` leaves it (what the store's RETURNING gives back)."""
        row = replace(self, **dict(write.changes)) if write.changes else self  # type: ignore[arg-type]
        if write.bump:
            row = replace(row, version=row.version + 1)
        if write.new_game:
            row = replace(row, games_started=row.games_started + 1)
        return row


@dataclass(frozen=True, slots=True)
class Write:
    """What one action changes on the room at the version it was planned on.

    `bump`: the version grows by one (every seat change, move and new game).
    `rematch_was`: a rematch request that does not bump the version is still
    guarded by the request list it read. `finished`: the write ends the game,
    so its result row is written in the same transaction, with the seats' names
    and computers as the planned-on row has them (a forfeit empties the seat in
    the same write). `seat`: the writer's connection now holds this mark.
    `vacated`: this seat was given up (leave, offline release): the sockets that
    held it become spectators in the same transaction.
    """

    changes: tuple[tuple[str, str], ...]
    bump: bool = True
    new_game: bool = False
    rematch_was: str | None = None
    finished: rules.Outcome | None = None
    seat: Mark | None = None
    token: str = ""  # a new seat's token, returned to the joiner only
    vacated: Mark | None = None


def seat_changes(mark: Mark, *, name: str, token_hash: str = "", bot: str = "") -> dict[str, str]:
    prefix = mark.lower()
    return {f"{prefix}_name": name, f"{prefix}_token_hash": token_hash, f"{prefix}_bot": bot}


def _is_cell(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 8


# --- planners: errors in the protocol's order, then the write -------------------------


def check_move_request(mark: Mark | None, cell: object) -> int:
    """The checks that need no room: `not_joined`, then `bad_cell`."""
    if mark is None:
        raise GameError("not_joined")
    if not _is_cell(cell):
        raise GameError("bad_cell")
    assert isinstance(cell, int)
    return cell


def check_holder(row: RoomRow, mark: Mark | None, holder: str | None) -> Mark:
    """`not_joined` unless the socket holds `mark` and the seat is still the one its token
    opened (`holder`: the token's hash; None for the computer, which holds no token).
    A seat given up or released since belongs to nobody, or to someone else."""
    if mark is None:
        raise GameError("not_joined")
    if holder is not None and not hmac.compare_digest(row.seat(mark).token_hash, holder):
        raise GameError("not_joined", "Your seat was given up; take a seat again.")
    return mark


def plan_move(
    row: RoomRow, *, mark: Mark | None, holder: str | None, cell: object, version: int | None
) -> Write:
    """`mark` plays `cell`; `version`, if the client sent one, must be current."""
    cell = check_move_request(mark, cell)
    mark = check_holder(row, mark, holder)
    board = row.cells
    outcome = rules.outcome(board)
    if outcome.status != "playing":
        raise GameError("game_over")
    if not row.seated:
        raise GameError("not_started")
    if version is not None and version != row.version:
        raise GameError("stale_version")
    if rules.to_move(board, as_mark(row.opener)) != mark:
        raise GameError("not_your_turn")
    if board[cell] is not None:
        raise GameError("cell_taken")
    after = rules.place(board, cell, mark)
    finished = rules.outcome(after)
    return Write(
        changes=(("board", rules.board_to_str(after)),),
        finished=finished if finished.status != "playing" else None,
    )


def plan_join(row: RoomRow, *, name: str, token: str | None, new_token: str) -> Write:
    """Take the first empty seat (X, then O), or reclaim the seat `token` was issued for."""
    if token is not None:
        digest = token_hash(token)
        for mark in MARKS:
            seat = row.seat(mark)
            if seat.token_hash and hmac.compare_digest(seat.token_hash, digest):
                return Write(changes=(), bump=False, seat=mark, token=token)
        raise GameError("bad_token")
    free = [mark for mark in MARKS if row.seat(mark).empty]
    if not free:
        raise GameError("room_full")
    mark = free[0]
    changes = seat_changes(mark, name=name, token_hash=token_hash(new_token))
    return Write(changes=tuple(changes.items()), seat=mark, token=new_token)


def plan_bot_invite(
    row: RoomRow, *, held: Mark | None, holder: str | None, level: rules.Level
) -> Write:
    """Seat a computer opponent in the empty seat."""
    check_holder(row, held, holder)
    free = [mark for mark in MARKS if row.seat(mark).empty]
    if not free:
        raise GameError("room_full")
    changes = seat_changes(free[0], name=BOT_NAME, bot=level)
    return Write(changes=tuple(changes.items()), seat=None)


def plan_rematch(row: RoomRow, *, mark: Mark | None, holder: str | None) -> Write:
    """Record that `mark` wants a new game; start it once both asked (a computer always agrees).

    A recorded request does not bump the version; it is guarded by the version
    and the request list it read.
    """
    mark = check_holder(row, mark, holder)
    if row.outcome.status == "playing":
        raise GameError("not_over")
    asked = row.rematch if mark in row.rematch else row.rematch + mark
    opponent = rules.other(mark)
    if opponent in asked or row.seat(opponent).bot:
        changes = {
            "board": EMPTY_BOARD_TEXT,
            "opener": rules.other(as_mark(row.opener)),
            "rematch": "",
        }
        return Write(changes=tuple(changes.items()), new_game=True)
    return Write(changes=(("rematch", asked),), bump=False, rematch_was=row.rematch)


def plan_bot_move(row: RoomRow, *, version: int) -> Write | None:
    """The computer's move for the turn at `version`, or None if there is nothing to do
    (someone already moved, the game changed, or no computer holds the seat to move)."""
    if row.version != version or not row.seated or row.outcome.status != "playing":
        return None
    mark = row.turn
    level = row.seat(mark).bot
    if not level:
        return None
    cell = rules.best_move(row.cells, mark, level="easy" if level == "easy" else "perfect")
    return plan_move(row, mark=mark, holder=None, cell=cell, version=version)


def forfeits(row: RoomRow) -> bool:
    """Giving up a seat now loses the game: both seats are taken, the game is not over,
    and a move was made (a game nobody has played yet is abandoned, not lost)."""
    return row.seated and row.outcome.status == "playing" and row.board != EMPTY_BOARD_TEXT


def plan_leave(row: RoomRow, *, mark: Mark | None, holder: str | None) -> Write:
    """`mark` gives up its seat (the `leave` message; the workers' release of a seat whose
    holder stayed away, with holder=the hash they saw). A running game is forfeited:
    the opponent wins, the result is counted. The board is cleared for whoever sits
    next; a computer opponent leaves with the last player."""
    mark = check_holder(row, mark, holder)
    opponent = rules.other(mark)
    changes = seat_changes(mark, name="")
    if row.seat(opponent).bot:
        changes.update(seat_changes(opponent, name=""))
    finished = rules.Outcome("won", opponent, None) if forfeits(row) else None
    new_game = row.board != EMPTY_BOARD_TEXT
    if new_game:
        changes.update(board=EMPTY_BOARD_TEXT)
    if row.rematch:
        changes.update(rematch="")
    return Write(changes=tuple(changes.items()), new_game=new_game, finished=finished, vacated=mark)


def bot_due(row: RoomRow) -> bool:
    """The computer holds the seat whose turn it is."""
    return row.seated and row.outcome.status == "playing" and bool(row.seat(row.turn).bot)


@dataclass(frozen=True, slots=True)
class Presence:
    """Who is connected to a room: open sockets per seat and spectators, as counted at
    `asof` (the database's clock, seconds). Presence changes without a version change,
    so of two counts the later `asof` is the newer, whatever versions they rode with."""

    x: int = 0
    o: int = 0
    spectators: int = 0
    asof: float = 0.0

    def online(self, mark: Mark) -> bool:
        return (self.x if mark == "X" else self.o) > 0

    def public(self) -> tuple[int, int, int, float]:
        return (self.x, self.o, self.spectators, self.asof)

    @classmethod
    def from_public(cls, values: list[Any] | tuple[Any, ...]) -> Presence:
        x, o, spectators, *asof = values  # jobs queued by an older release carry no asof
        return cls(int(x), int(o), int(spectators), float(asof[0]) if asof else 0.0)

    def seated(self, mark: Mark) -> Presence:
        """One spectator's socket took (or reclaimed) the seat `mark` (same count time)."""
        spectators = max(0, self.spectators - 1)
        if mark == "X":
            return Presence(self.x + 1, self.o, spectators, self.asof)
        return Presence(self.x, self.o + 1, spectators, self.asof)


@dataclass(frozen=True, slots=True)
class Applied:
    """A write that landed: the room as it left it (`row`), as it was planned on
    (`before`), and what follows from it."""

    row: RoomRow
    write: Write
    before: RoomRow

    @property
    def finished_key(self) -> str | None:
        """The result's key when this write ended a game (its job counts it once)."""
        return result_key(self.row.code, self.row.version) if self.write.finished else None

    @property
    def changed(self) -> bool:
        """The room changed (a seat reclaimed with a token changes nothing)."""
        return bool(self.write.changes) or self.write.bump

    @property
    def bot_due(self) -> bool:
        return bot_due(self.row)


def result_key(code: str, version: int) -> str:
    """A finished game is named by its room and the version its last move made."""
    return f"{code}:{version}"
