"""game.rules checked against independent oracles, exhaustively where the game is small enough."""

from __future__ import annotations

import random
from collections.abc import Iterator
from functools import cache

import pytest
from hypothesis import given
from hypothesis import strategies as st

from game.rules import (
    EMPTY_BOARD,
    WIN_LINES,
    Board,
    Level,
    Mark,
    Outcome,
    best_move,
    board_from_str,
    board_to_str,
    legal_moves,
    other,
    outcome,
    place,
    to_move,
)

MARKS: tuple[Mark, Mark] = ("X", "O")
REACHABLE_BOARDS = 5478

# The oracle's lines, built arithmetically rather than copied: rows, columns, diagonals.
ORACLE_LINES = (
    [tuple(3 * r + c for c in range(3)) for r in range(3)]
    + [tuple(3 * r + c for r in range(3)) for c in range(3)]
    + [tuple(4 * i for i in range(3)), tuple(2 + 2 * i for i in range(3))]
)


def oracle_outcome(board: Board) -> Outcome:
    """Classify a board by sets of occupied cells, independently of game.rules."""
    taken = {mark: {i for i, cell in enumerate(board) if cell == mark} for mark in MARKS}
    for line in ORACLE_LINES:
        for mark in MARKS:
            if set(line) <= taken[mark]:
                return Outcome("won", mark, (line[0], line[1], line[2]))
    if len(taken["X"]) + len(taken["O"]) == 9:
        return Outcome("draw", None, None)
    return Outcome("playing", None, None)


def empty_cells(board: Board) -> list[int]:
    return [i for i in range(9) if board[i] is None]


def put(board: Board, cell: int, mark: Mark) -> Board:
    """Oracle's own move, so enumeration does not lean on place()."""
    cells = list(board)
    cells[cell] = mark
    return tuple(cells)


@cache
def reachable(opener: Mark) -> dict[Board, Mark]:
    """Every board reachable with `opener` moving first, mapped to the mark due to move.

    The mover comes from the ply parity of the search, not from counting marks.
    """
    found: dict[Board, Mark] = {EMPTY_BOARD: opener}
    frontier = [EMPTY_BOARD]
    mover = opener
    while frontier:
        following: list[Board] = []
        for board in frontier:
            if oracle_outcome(board).status != "playing":
                continue
            for cell in empty_cells(board):
                child = put(board, cell, mover)
                if child not in found:
                    found[child] = other(mover)
                    following.append(child)
        frontier = following
        mover = other(mover)
    return found


def playing_boards(opener: Mark) -> Iterator[tuple[Board, Mark]]:
    for board, mover in reachable(opener).items():
        if oracle_outcome(board).status == "playing":
            yield board, mover


@cache
def oracle_value(board: Board, mover: Mark) -> tuple[int, int]:
    """(result for mover: 1 win / 0 draw / -1 loss, plies until the game ends) under best play.

    Best play means: win if possible, as fast as possible; else draw; else lose as slowly
    as possible. Written as a plain search over (result, plies) pairs, not scores.
    """
    verdict = oracle_outcome(board)
    if verdict.status == "won":
        return (1 if verdict.winner == mover else -1, 0)
    if verdict.status == "draw":
        return (0, 0)
    children = [oracle_value(put(board, c, mover), other(mover)) for c in empty_cells(board)]
    options = [(-result, plies + 1) for result, plies in children]
    return max(options, key=preference)


def preference(value: tuple[int, int]) -> tuple[int, int]:
    result, plies = value
    return (result, -plies if result > 0 else plies if result < 0 else 0)


# --- the board, outcomes and turns -------------------------------------------------------


def test_win_lines_are_rows_then_columns_then_diagonals() -> None:
    assert list(WIN_LINES) == ORACLE_LINES


def test_empty_board_is_nine_empty_cells() -> None:
    assert EMPTY_BOARD == (None,) * 9
    assert board_to_str(EMPTY_BOARD) == "........."


def test_other_swaps_marks() -> None:
    assert other("X") == "O"
    assert other("O") == "X"


@pytest.mark.parametrize("opener", MARKS)
def test_every_reachable_board_is_classified_like_the_oracle(opener: Mark) -> None:
    boards = reachable(opener)
    assert len(boards) == REACHABLE_BOARDS
    tally: dict[str, int] = {}
    for board, mover in boards.items():
        expected = oracle_outcome(board)
        assert outcome(board) == expected, board_to_str(board)
        key = expected.status if expected.winner is None else f"won by {expected.winner}"
        tally[key] = tally.get(key, 0) + 1
        assert to_move(board, opener) == mover, board_to_str(board)
        if expected.status == "playing":
            assert legal_moves(board) == empty_cells(board)
        else:
            assert legal_moves(board) == []
    # The known totals: 958 finished boards, of which the opener wins 626, the other 316.
    assert tally == {
        "playing": 4520,
        f"won by {opener}": 626,
        f"won by {other(opener)}": 316,
        "draw": 16,
    }


def test_o_opening_enumerates_the_mirror_of_x_opening() -> None:
    swap = {"X": "O", "O": "X", None: None}
    mirrored = {tuple(swap[cell] for cell in board) for board in reachable("X")}
    assert mirrored == set(reachable("O"))


def test_first_complete_line_in_win_lines_order_is_reported() -> None:
    # Row 0 and column 0 are both complete; the row comes first in WIN_LINES.
    assert outcome(board_from_str("XXXXOOXOO")) == Outcome("won", "X", (0, 1, 2))
    assert outcome(board_from_str("OXOXXOXOX")) == Outcome("draw", None, None)
    assert outcome(EMPTY_BOARD) == Outcome("playing", None, None)


def test_to_move_is_the_opener_on_equal_counts_else_the_other() -> None:
    assert to_move(EMPTY_BOARD, "X") == "X"
    assert to_move(EMPTY_BOARD, "O") == "O"
    assert to_move(board_from_str("O........"), "O") == "X"
    assert to_move(board_from_str("X...O...."), "O") == "O"


# --- random games (hypothesis) -----------------------------------------------------------


@given(order=st.permutations(range(9)), opener=st.sampled_from(MARKS))
def test_random_game_stops_exactly_when_outcome_says_it_is_over(
    order: list[int], opener: Mark
) -> None:
    board = EMPTY_BOARD
    moved = 0
    last: Mark | None = None
    for cell in order:
        assert outcome(board).status == "playing"
        mark = to_move(board, opener)
        assert mark == (opener if moved % 2 == 0 else other(opener))
        board = place(board, cell, mark)
        moved += 1
        last = mark
        assert board.count(opener) - board.count(other(opener)) in (0, 1)
        assert board_from_str(board_to_str(board)) == board
        assert outcome(board) == oracle_outcome(board)
        if outcome(board).status != "playing":
            break
    result = outcome(board)
    assert result.status != "playing"
    assert legal_moves(board) == []
    if result.status == "won":
        assert result.winner == last
        assert result.line in WIN_LINES
        assert all(board[i] == last for i in result.line or ())
    else:
        assert moved == 9
        assert None not in board


@st.composite
def games_in_progress(draw: st.DrawFn) -> tuple[Board, Mark]:
    """A board from a random legal game, cut at a random ply, and its opener."""
    order = draw(st.permutations(range(9)))
    opener = draw(st.sampled_from(MARKS))
    stop = draw(st.integers(min_value=0, max_value=9))
    board = EMPTY_BOARD
    for cell in order[:stop]:
        if outcome(board).status != "playing":
            break
        board = place(board, cell, to_move(board, opener))
    return board, opener


@given(game=games_in_progress(), data=st.data())
def test_place_rejects_a_taken_cell(game: tuple[Board, Mark], data: st.DataObject) -> None:
    board, _ = game
    taken = [i for i in range(9) if board[i] is not None]
    if not taken:
        board = place(board, 4, "X")
        taken = [4]
    cell = data.draw(st.sampled_from(taken))
    mark = data.draw(st.sampled_from(MARKS))
    with pytest.raises(ValueError, match="taken"):
        place(board, cell, mark)


@given(
    game=games_in_progress(),
    cell=st.integers().filter(lambda n: not 0 <= n <= 8),
    mark=st.sampled_from(MARKS),
)
def test_place_rejects_a_cell_outside_0_to_8(
    game: tuple[Board, Mark], cell: int, mark: Mark
) -> None:
    board, _ = game
    with pytest.raises(ValueError, match=r"0\.\.8"):
        place(board, cell, mark)


@given(game=games_in_progress(), mark=st.sampled_from(MARKS))
def test_place_changes_only_the_chosen_cell(game: tuple[Board, Mark], mark: Mark) -> None:
    board, _ = game
    for cell in empty_cells(board):
        after = place(board, cell, mark)
        assert after[cell] == mark
        assert [a for i, a in enumerate(after) if i != cell] == [
            b for i, b in enumerate(board) if i != cell
        ]


@given(text=st.text(alphabet="XO.", min_size=9, max_size=9))
def test_board_strings_round_trip(text: str) -> None:
    assert board_to_str(board_from_str(text)) == text
    assert len(board_from_str(text)) == 9


@given(text=st.text(max_size=12))
def test_board_from_str_rejects_anything_but_nine_x_o_dot(text: str) -> None:
    if len(text) == 9 and set(text) <= set("XO."):
        return
    with pytest.raises(ValueError, match="9 characters"):
        board_from_str(text)


@pytest.mark.parametrize("text", ["", "........", "..........", "x........", "X.O.-....", " " * 9])
def test_board_from_str_rejects_malformed_examples(text: str) -> None:
    with pytest.raises(ValueError, match="9 characters"):
        board_from_str(text)


# --- the perfect bot ---------------------------------------------------------------------


def finished_boards_against_everything(bot: Mark, opener: Mark) -> set[Board]:
    """Play `bot` (perfect) against every possible sequence of opponent moves."""
    finished: set[Board] = set()
    seen: set[Board] = set()
    stack = [EMPTY_BOARD]
    while stack:
        board = stack.pop()
        if board in seen:
            continue
        seen.add(board)
        if oracle_outcome(board).status != "playing":
            finished.add(board)
            continue
        mover = to_move(board, opener)
        if mover == bot:
            stack.append(place(board, best_move(board, bot), bot))
        else:
            stack.extend(place(board, cell, mover) for cell in empty_cells(board))
    return finished


@pytest.mark.parametrize("opener", MARKS)
@pytest.mark.parametrize("bot", MARKS)
def test_perfect_bot_never_loses_to_any_sequence_of_moves(bot: Mark, opener: Mark) -> None:
    finished = finished_boards_against_everything(bot, opener)
    assert finished
    losses = [board_to_str(b) for b in finished if oracle_outcome(b).winner == other(bot)]
    assert losses == []


@pytest.mark.parametrize("opener", MARKS)
def test_perfect_against_perfect_is_always_a_draw(opener: Mark) -> None:
    board = EMPTY_BOARD
    while outcome(board).status == "playing":
        mark = to_move(board, opener)
        board = place(board, best_move(board, mark), mark)
    assert outcome(board).status == "draw"


@pytest.mark.parametrize("opener", MARKS)
def test_perfect_bot_plays_the_oracles_best_move_on_every_reachable_board(opener: Mark) -> None:
    """Optimal result, fastest win / slowest loss, ties broken by the lowest cell index."""
    for board, mover in playing_boards(opener):
        cells = empty_cells(board)
        values = {c: oracle_value(put(board, c, mover), other(mover)) for c in cells}
        options = {c: (-result, plies + 1) for c, (result, plies) in values.items()}
        best = max(preference(v) for v in options.values())
        expected = min(c for c in cells if preference(options[c]) == best)
        assert best_move(board, mover) == expected, board_to_str(board)


@pytest.mark.parametrize("opener", MARKS)
def test_perfect_bot_takes_an_immediate_win_when_one_exists(opener: Mark) -> None:
    checked = 0
    for board, mover in playing_boards(opener):
        wins = [c for c in empty_cells(board) if oracle_outcome(put(board, c, mover)).winner]
        if wins:
            checked += 1
            assert best_move(board, mover) in wins, board_to_str(board)
    assert checked > 0


def test_perfect_bot_is_deterministic_and_prefers_the_lowest_index() -> None:
    # Every opening move draws, so the tie-break picks cell 0, every time.
    assert {best_move(EMPTY_BOARD, "X") for _ in range(5)} == {0}


def test_perfect_bot_blocks_an_immediate_loss() -> None:
    # X threatens cell 2; O has nothing better than blocking.
    assert best_move(board_from_str("XX..O...."), "O") == 2


@pytest.mark.parametrize("level", ["perfect", "easy"])
@pytest.mark.parametrize("text", ["XXXOO....", "OXOXXOXOX", "XOXXOOOXX", "O..XO.X.O"])
def test_bot_refuses_a_finished_board(level: Level, text: str) -> None:
    board = board_from_str(text)
    assert outcome(board).status != "playing"
    with pytest.raises(ValueError, match="game is over"):
        best_move(board, "X", level=level)


# --- the easy bot ------------------------------------------------------------------------


@given(game=games_in_progress(), seed=st.integers(), data=st.data())
def test_easy_bot_only_plays_legal_moves(
    game: tuple[Board, Mark], seed: int, data: st.DataObject
) -> None:
    board, _ = game
    if outcome(board).status != "playing":
        return
    mark = data.draw(st.sampled_from(MARKS))
    move = best_move(board, mark, level="easy", rng=random.Random(seed))
    assert move in legal_moves(board)


@pytest.mark.parametrize("opener", MARKS)
def test_easy_bot_takes_an_immediate_win_when_one_exists(opener: Mark) -> None:
    rng = random.Random(1)
    for board, mover in playing_boards(opener):
        wins = [c for c in empty_cells(board) if oracle_outcome(put(board, c, mover)).winner]
        if wins:
            assert best_move(board, mover, level="easy", rng=rng) in wins, board_to_str(board)


def test_easy_bot_blocks_an_immediate_loss_about_half_the_time() -> None:
    board = board_from_str("XX..O....")  # O to move, no win of its own; X threatens cell 2
    rng = random.Random(12345)
    trials = 2000
    blocks = sum(best_move(board, "O", level="easy", rng=rng) == 2 for _ in range(trials))
    # Blocks half the time, plus 1 in 6 of the random moves: expected 7/12 ~= 0.58.
    assert 0.5 < blocks / trials < 0.67


def test_easy_bot_works_without_an_explicit_rng() -> None:
    assert best_move(EMPTY_BOARD, "X", level="easy") in range(9)
