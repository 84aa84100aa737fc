"""Pure tic-tac-toe rules: boards, outcomes, turns and a bot. No Django, no I/O.

A board is a 9-tuple of cells in row-major order (index 0 is top-left, 8 is
bottom-right); a cell is "X", "O" or None for empty. Every function here is
pure: it never mutates its arguments and returns new boards.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from typing import Literal

Mark = Literal["X", "O"]
Cell = Mark | None
Board = tuple[Cell, ...]
Status = Literal["playing", "won", "draw"]
Level = Literal["perfect", "easy"]

EMPTY_BOARD: Board = (None,) * 9

WIN_LINES: tuple[tuple[int, int, int], ...] = (
    (0, 1, 2),
    (3, 4, 5),
    (6, 7, 8),
    (0, 3, 6),
    (1, 4, 7),
    (2, 5, 8),
    (0, 4, 8),
    (2, 4, 6),
)

_CHAR_TO_CELL: dict[str, Cell] = {"X": "X", "O": "O", ".": None}
_RNG = random.Random()


def other(mark: Mark) -> Mark:
    """The opponent's mark."""
    return "O" if mark == "X" else "X"


def board_from_str(text: str) -> Board:
    """Parse 9 characters of "X", "O" or "." (empty); ValueError otherwise."""
    if len(text) != 9 or any(ch not in _CHAR_TO_CELL for ch in text):
        raise ValueError(f"a board is 9 characters of 'X', 'O' or '.', got {text!r}")
    return tuple(_CHAR_TO_CELL[ch] for ch in text)


def board_to_str(board: Board) -> str:
    """The inverse of board_from_str: e.g. "X...O....\"."""
    return "".join("." if cell is None else cell for cell in board)


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    winner: Mark | None
    line: tuple[int, int, int] | None


_PLAYING = Outcome("playing", None, None)
_DRAW = Outcome("draw", None, None)


def outcome(board: Board) -> Outcome:
    """Won by the first complete line in WIN_LINES order; else draw if full; else playing."""
    for line in WIN_LINES:
        a, b, c = line
        mark = board[a]
        if mark is not None and mark == board[b] == board[c]:
            return Outcome("won", mark, line)
    if None in board:
        return _PLAYING
    return _DRAW


def to_move(board: Board, opener: Mark) -> Mark:
    """Whose turn it is: the opener when both marks have been played equally often."""
    if board.count("X") == board.count("O"):
        return opener
    return other(opener)


def place(board: Board, cell: int, mark: Mark) -> Board:
    """The board with `mark` in `cell`; ValueError if cell is not 0..8 or is taken."""
    if not 0 <= cell <= 8:
        raise ValueError(f"cell must be 0..8, got {cell}")
    if board[cell] is not None:
        raise ValueError(f"cell {cell} is already taken")
    return (*board[:cell], mark, *board[cell + 1 :])


def legal_moves(board: Board) -> list[int]:
    """Empty cells in ascending order, or [] once the game is won or drawn."""
    if outcome(board).status != "playing":
        return []
    return [i for i, cell in enumerate(board) if cell is None]


@cache
def _score(board: Board, mark: Mark) -> int:
    """Minimax value of `board` for `mark`, who is about to move.

    A win is worth 1 + the number of empty cells left when it happens, a loss
    the negative of that, a draw 0: so faster wins and slower losses score better.
    """
    result = outcome(board)
    if result.winner is not None:
        value = 1 + board.count(None)
        return value if result.winner == mark else -value
    moves = legal_moves(board)
    if not moves:
        return 0
    return max(-_score(place(board, cell, mark), other(mark)) for cell in moves)


def _winning_cells(board: Board, mark: Mark) -> list[int]:
    return [c for c in legal_moves(board) if outcome(place(board, c, mark)).winner == mark]


def best_move(
    board: Board, mark: Mark, *, level: Level = "perfect", rng: random.Random | None = None
) -> int:
    """The cell `mark` should play next; ValueError if the game is already over.

    "perfect": full minimax, preferring faster wins and slower losses; among
    equally good moves the lowest cell index wins, so it is deterministic.
    "easy": an immediate win if there is one (lowest index), else blocks the
    opponent's immediate win half the time, else a random legal move.
    `rng` defaults to a module-level random.Random.
    """
    moves = legal_moves(board)
    if not moves:
        raise ValueError("the game is over; there is no move to make")
    if level == "perfect":
        # max() returns the first maximum, and moves are in ascending order.
        return max(moves, key=lambda cell: -_score(place(board, cell, mark), other(mark)))
    rand = _RNG if rng is None else rng
    wins = _winning_cells(board, mark)
    if wins:
        return wins[0]
    blocks = _winning_cells(board, other(mark))
    if blocks and rand.random() < 0.5:
        return rand.choice(blocks)
    return rand.choice(moves)
