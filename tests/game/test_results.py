"""The leaderboard at service level: finished games counted by game/results.py, read by
game/selectors.py `leaderboard` (and the HTTP API that serves it, docs/protocol.md).

Games are played through game/services.py, which writes the `GameResult` row with the
finishing move; `results.result_count` (the `game.finished` job's ORM path) applies it.
What is proven: most wins first, fewer losses breaking ties, then the name; a win
extends the streak, a loss or a draw ends it, `best_streak` keeps the longest run; a
game against yourself counts a win and a loss and ends the streak; the computer is never
listed; a result counted twice (a redelivered job, the sweep) is counted once.

Runs on SQLite (`make test-sqlite`) and on PostgreSQL (`make test-postgres`).
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from game import presence, results, services
from game.models import GameResult, LeaderboardEntry, Room
from game.rules import Mark
from game.selectors import leaderboard, room_state
from game.services import BOT_NAME, result_key

pytestmark = [pytest.mark.both_databases, pytest.mark.django_db]

REPLICA = "web-results-test"
ENTRY_KEYS = {"name", "wins", "losses", "draws", "streak", "best_streak"}

# The moves of a game with each outcome; "" is a draw. X always opens a fresh room.
GAMES: dict[str, list[tuple[Mark, int]]] = {
    "X": [("X", 0), ("O", 3), ("X", 1), ("O", 4), ("X", 2)],  # X: top row
    "O": [("X", 0), ("O", 3), ("X", 1), ("O", 4), ("X", 8), ("O", 5)],  # O: middle row
    # X O X / X O O / O X X
    "": [("X", 0), ("O", 1), ("X", 2), ("O", 4), ("X", 3), ("O", 5), ("X", 7), ("O", 6), ("X", 8)],
}

_room_codes = itertools.count(1)

Row = tuple[int, int, int, int, int]  # wins, losses, draws, streak, best streak


# --- helpers ------------------------------------------------------------------------


def finished(x: str, o: str, winner: str) -> str:
    """Play one game in a fresh room, `x` at X and `o` at O, that `winner` wins ("" a
    draw); the key of the result row its last move wrote, not counted yet."""
    code = f"lb-{next(_room_codes)}"
    for seat, name in (("x", x), ("o", o)):
        channel = f"{code}-{seat}"
        presence.connection_open(code=code, channel_name=channel, replica=REPLICA)
        services.seat_join(code=code, channel_name=channel, held=None, name=name, token=None)
    version = 2
    for mark, cell in GAMES[winner]:
        version = services.move_play(code=code, mark=mark, cell=cell, version=version)
    key = result_key(code, version)
    result = GameResult.objects.get(key=key)
    assert (result.x_name, result.o_name, result.winner) == (x, o, winner)
    assert (result.x_bot, result.o_bot, result.counted) == (False, False, False)
    return key


def count(key: str) -> None:
    """Count a result that has not been counted yet."""
    assert results.result_count(key=key) is True


def played(x: str, o: str, winner: str) -> None:
    count(finished(x, o, winner))


def board() -> dict[str, Row]:
    """The whole leaderboard as the selector reads it: name -> (w, l, d, streak, best)."""
    rows = leaderboard(limit=1000)
    for row in rows:
        assert set(row) == ENTRY_KEYS, row
    return {
        str(row["name"]): (
            int(str(row["wins"])),
            int(str(row["losses"])),
            int(str(row["draws"])),
            int(str(row["streak"])),
            int(str(row["best_streak"])),
        )
        for row in rows
    }


def entry(name: str, wins: int, losses: int, draws: int = 0, **extra: int) -> LeaderboardEntry:
    return LeaderboardEntry.objects.create(
        name=name, wins=wins, losses=losses, draws=draws, **extra
    )


# --- ordering -------------------------------------------------------------------------


def test_most_wins_first_then_fewer_losses_then_the_name() -> None:
    entry("ed", 0, 0, draws=9)
    entry("cy", 3, 1, draws=7, streak=3, best_streak=9)
    entry("di", 5, 9)
    entry("ana", 3, 1)
    entry("bo", 3, 0)
    entry("al", 3, 0, draws=1)

    names = [row["name"] for row in leaderboard()]

    # di: most wins, however many losses; al and bo: 3 wins, no loss (name breaks the
    # tie, draws do not); ana and cy: 3-1 (name again, not draws or streaks); ed: no win.
    assert names == ["di", "al", "bo", "ana", "cy", "ed"]


def test_limit_keeps_the_top_of_the_order_and_each_row_has_the_protocol_fields() -> None:
    for i, name in enumerate(["ana", "bo", "cy", "di"]):
        entry(name, wins=i, losses=0, draws=1, streak=i, best_streak=i + 1)

    top = leaderboard(limit=2)

    assert top == [
        {"name": "di", "wins": 3, "losses": 0, "draws": 1, "streak": 3, "best_streak": 4},
        {"name": "cy", "wins": 2, "losses": 0, "draws": 1, "streak": 2, "best_streak": 3},
    ]
    assert len(leaderboard()) == 4


def test_the_http_api_serves_the_same_order(client: Client) -> None:
    entry("bo", 2, 1)
    entry("ana", 2, 0)
    entry("cy", 1, 0)

    response = client.get("/api/leaderboard", {"limit": "2"})

    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    assert body == {"leaderboard": leaderboard(limit=2)}
    assert [row["name"] for row in body["leaderboard"]] == ["ana", "bo"]


def test_counted_games_come_out_in_leaderboard_order() -> None:
    played("ana", "bo", "X")  # ana 1-0, bo 0-1
    played("cy", "ana", "X")  # cy 1-0, ana 1-1
    played("cy", "di", "")  # cy 1-0-1, di 0-0-1
    played("bo", "di", "O")  # di 1-0-1, bo 0-2

    assert [row["name"] for row in leaderboard()] == ["cy", "di", "ana", "bo"]


# --- counting: wins, losses, draws, streaks ------------------------------------------


def test_a_win_extends_the_streak_a_loss_ends_it_and_best_streak_keeps_the_longest() -> None:
    steps: list[tuple[tuple[str, str, str], Row]] = [
        # (x, o, winner) -> ana's (wins, losses, draws, streak, best streak) after it
        (("ana", "bo", "X"), (1, 0, 0, 1, 1)),
        (("bo", "ana", "O"), (2, 0, 0, 2, 2)),  # a win as O extends it too
        (("ana", "cy", "X"), (3, 0, 0, 3, 3)),
        (("ana", "bo", "O"), (3, 1, 0, 0, 3)),  # a loss ends it; the best run stays
        (("cy", "ana", "O"), (4, 1, 0, 1, 3)),
        (("ana", "bo", "X"), (5, 1, 0, 2, 3)),
        (("ana", "cy", "X"), (6, 1, 0, 3, 3)),
        (("bo", "ana", "O"), (7, 1, 0, 4, 4)),  # a longer run raises the best
    ]
    for game, expected in steps:
        played(*game)
        assert board()["ana"] == expected, game

    # The other side of the same games: bo's one win started a run of 1 that its next
    # loss ended; cy never won.
    assert board()["bo"] == (1, 4, 0, 0, 1)
    assert board()["cy"] == (0, 3, 0, 0, 0)


def test_a_draw_counts_for_both_players_and_ends_both_streaks() -> None:
    played("ana", "cy", "X")
    played("ana", "cy", "X")
    played("bo", "cy", "X")
    assert (board()["ana"][3], board()["bo"][3]) == (2, 1)

    played("ana", "bo", "")

    assert board()["ana"] == (2, 0, 1, 0, 2)
    assert board()["bo"] == (1, 0, 1, 0, 1)
    assert board()["cy"] == (0, 3, 0, 0, 0)  # not in the drawn game: untouched

    played("bo", "ana", "X")  # after the draw, a win starts a new run
    assert board()["bo"] == (2, 0, 1, 1, 1)
    assert board()["ana"] == (2, 1, 1, 0, 2)


def test_a_first_game_that_is_a_draw_or_a_loss_lists_the_player_with_no_streak() -> None:
    played("ana", "bo", "")
    played("cy", "di", "X")

    assert board() == {
        "ana": (0, 0, 1, 0, 0),
        "bo": (0, 0, 1, 0, 0),
        "cy": (1, 0, 0, 1, 1),
        "di": (0, 1, 0, 0, 0),
    }


def test_a_game_against_yourself_counts_a_win_and_a_loss_and_ends_the_streak() -> None:
    played("ana", "bo", "X")
    played("bo", "ana", "O")
    assert board()["ana"] == (2, 0, 0, 2, 2)

    played("ana", "ana", "X")  # both seats under one name

    assert board()["ana"] == (3, 1, 0, 0, 2)
    played("ana", "ana", "O")
    assert board()["ana"] == (4, 2, 0, 0, 2)
    # What one game adds, per seat: X's verdict, then O's, under the same name.
    assert results.tally("X", [("ana", False), ("ana", False)]) == {"ana": (1, 1, 0)}
    assert results.tally("O", [("ana", False), ("ana", False)]) == {"ana": (1, 1, 0)}


def test_a_drawn_game_against_yourself_counts_a_draw_for_each_seat() -> None:
    played("ana", "bo", "X")

    played("ana", "ana", "")

    assert board()["ana"] == (1, 0, 2, 0, 1)
    assert results.tally("", [("ana", False), ("ana", False)]) == {"ana": (0, 0, 2)}


# --- the computer ---------------------------------------------------------------------


def test_a_game_against_the_computer_counts_for_the_human_only() -> None:
    played("ana", "bo", "X")  # a streak of 1 going in
    code = "lb-bot"
    presence.connection_open(code=code, channel_name="ana-bot", replica=REPLICA)
    services.seat_join(code=code, channel_name="ana-bot", held=None, name="ana", token=None)
    assert services.bot_invite(code=code, held="X") == "O"
    while (state := room_state(code)) is not None and state["status"] == "playing":
        if state["turn"] == "X":
            cell = state["board"].index(None)
            services.move_play(code=code, mark="X", cell=cell, version=None)
        else:
            assert services.bot_play(code=code, version=state["version"]) is not None
    (result,) = GameResult.objects.filter(room_id=code)
    assert (result.x_name, result.o_name, result.x_bot, result.o_bot) == (
        "ana",
        BOT_NAME,
        False,
        True,
    )
    assert result.winner in ("O", "")  # the perfect computer never loses

    count(result.key)

    lost = result.winner == "O"
    assert board() == {
        "ana": (1, int(lost), int(not lost), 0, 1),  # the game counts, and ends the streak
        "bo": (0, 1, 0, 0, 0),
    }
    assert not LeaderboardEntry.objects.filter(name=BOT_NAME).exists()


def test_the_computer_is_never_listed_whichever_seat_and_result() -> None:
    room = Room.objects.create(code="lb-bots")
    games = [
        # (x, o, x is the computer, o is the computer, winner)
        (BOT_NAME, "ana", True, False, "X"),
        ("ana", BOT_NAME, False, True, "X"),
        (BOT_NAME, "bo", True, False, ""),
        ("bo", BOT_NAME, False, True, "O"),
        (BOT_NAME, "ana", True, False, "O"),
    ]
    for i, (x, o, x_bot, o_bot, winner) in enumerate(games):
        GameResult.objects.create(
            key=f"lb-bots:{i}",
            room=room,
            x_name=x,
            o_name=o,
            x_bot=x_bot,
            o_bot=o_bot,
            winner=winner,
        )
        count(f"lb-bots:{i}")

    assert board() == {"ana": (2, 1, 0, 2, 2), "bo": (0, 1, 1, 0, 0)}
    assert BOT_NAME not in [row["name"] for row in leaderboard(limit=100)]
    assert results.tally("X", [(BOT_NAME, True), ("ana", False)]) == {"ana": (0, 1, 0)}


# --- counted once ---------------------------------------------------------------------


def test_a_result_counted_twice_is_counted_once() -> None:
    played("ana", "bo", "X")
    key = finished("bo", "ana", "O")

    assert results.result_count(key=key) is True
    after_first = board()
    assert results.result_count(key=key) is False  # a redelivered job
    assert results.result_count(key=key) is False

    assert board() == after_first
    assert after_first == {"ana": (2, 0, 0, 2, 2), "bo": (0, 2, 0, 0, 0)}
    assert GameResult.objects.get(key=key).counted is True


def test_an_unknown_result_counts_nothing() -> None:
    played("ana", "bo", "X")
    before = board()

    assert results.result_count(key="no-such-room:5") is False

    assert board() == before


def test_the_sweep_finds_an_uncounted_result_and_counting_it_again_changes_nothing() -> None:
    """A job lost in transit: the workers' sweep lists the old uncounted result; once it is
    counted, the sweep no longer lists it and the late original job counts nothing."""
    lost = finished("ana", "bo", "X")
    fresh = finished("cy", "di", "")
    GameResult.objects.filter(key=lost).update(finished_at=timezone.now() - timedelta(hours=1))

    assert results.results_uncounted(older_than_seconds=600) == [lost]  # not the fresh one

    count(lost)  # by the sweep
    assert results.results_uncounted(older_than_seconds=600) == []
    assert results.result_count(key=lost) is False  # the original job, arriving late
    count(fresh)

    assert board() == {
        "ana": (1, 0, 0, 1, 1),
        "cy": (0, 0, 1, 0, 0),
        "di": (0, 0, 1, 0, 0),
        "bo": (0, 1, 0, 0, 0),
    }
    assert not GameResult.objects.filter(counted=False).exists()
