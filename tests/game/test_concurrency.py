"""Compare-and-swap under real concurrency on PostgreSQL.

Threads, each with its own database connection, wait on a barrier and then call
the same service on the same room at once, for many rounds. Half the runs also
widen the race window (a short pause between a writer's read and its write), so
every racer reads the same version and the compare-and-swap is what decides.

These tests need PostgreSQL and FAIL (never skip) elsewhere: `make test-postgres`
runs them with DATABASE_URL set; the SQLite run deselects the `postgres` marker.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import psycopg
import pytest
from django.db import connection

from game import matchmaking, presence, rules, services
from game.exceptions import GameError
from game.models import Connection, MatchTicket, Room
from game.rooms import RoomRow, Write
from game.rules import Mark
from game.selectors import room_state
from game.services import SeatGrant

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

T = TypeVar("T")
RACERS = 8
RACE_TIMEOUT = 30.0
GAMES = 3
WINDOW_SECONDS = 0.01


def require_postgres() -> None:
    assert connection.vendor == "postgresql", (
        f"tests/game/test_concurrency.py needs PostgreSQL, got {connection.vendor!r}: run it with "
        "DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres (make test-postgres)"
    )


# --- racing -------------------------------------------------------------------------


def race(calls: list[Callable[[], T]]) -> list[T | GameError]:
    """Run every call in its own thread, released together by a barrier.

    Each thread opens its own connection before the barrier and closes it at
    the end. GameErrors are results; any other exception fails the test.
    """
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    crashes: list[BaseException] = []

    def run(index: int) -> None:
        try:
            connection.ensure_connection()
            barrier.wait(RACE_TIMEOUT)
            results[index] = calls[index]()
        except GameError as error:
            results[index] = error
        except BaseException as crash:
            crashes.append(crash)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(RACE_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a racer hung"
    if crashes:
        raise crashes[0]
    return results


def codes(results: list[Any]) -> Counter[str]:
    return Counter(result.code for result in results if isinstance(result, GameError))


@dataclass
class CasLog:
    lost: int = 0
    won: int = 0


@pytest.fixture
def cas_log(monkeypatch: pytest.MonkeyPatch) -> CasLog:
    """Count compare-and-swap writes that found the version already moved on."""
    log = CasLog()
    real = services._apply
    lock = threading.Lock()

    def counting(row: RoomRow, write: Write, *, channel_name: str | None) -> bool:
        applied = real(row, write, channel_name=channel_name)
        with lock:
            if applied:
                log.won += 1
            else:
                log.lost += 1
        return applied

    monkeypatch.setattr(services, "_apply", counting)
    return log


@pytest.fixture(params=["natural", "widened"])
def window(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """`widened`: every service pauses between reading the room and writing it."""
    if request.param == "widened":
        real = services.read_row

        def slow(code: str) -> RoomRow:
            result = real(code)
            time.sleep(WINDOW_SECONDS)
            return result

        monkeypatch.setattr(services, "read_row", slow)
    return str(request.param)


# --- helpers ------------------------------------------------------------------------


def room(code: str) -> Room:
    return Room.objects.get(code=code)


def seated(code: str, *, bot: bool = False) -> None:
    presence.connection_open(code=code, channel_name=f"{code}-x", replica="r")
    services.seat_join(code=code, channel_name=f"{code}-x", held=None, name="ana", token=None)
    if bot:
        services.bot_invite(code=code, held="X")
        return
    presence.connection_open(code=code, channel_name=f"{code}-o", replica="r")
    services.seat_join(code=code, channel_name=f"{code}-o", held=None, name="bo", token=None)


def finish_game(code: str, rng: random.Random) -> None:
    """Play random legal moves until the game is over."""
    while True:
        row = room(code)
        board, outcome, _ = services.room_outcome(row)
        if outcome.status != "playing":
            return
        mark = rules.to_move(board, services.as_mark(row.opener))
        cell = rng.choice(rules.legal_moves(board))
        services.move_play(code=code, mark=mark, cell=cell, version=row.version)


# --- moves --------------------------------------------------------------------------


@pytest.mark.parametrize("send_version", [True, False], ids=["with_version", "no_version"])
def test_racing_moves_accept_exactly_one_per_version(
    window: str, cas_log: CasLog, send_version: bool
) -> None:
    require_postgres()
    code = "race-moves"
    seated(code)
    rng = random.Random(f"{window}-{send_version}")
    expected_version = 2
    games = 0
    rounds = 0
    while True:
        row = room(code)
        board, outcome, _ = services.room_outcome(row)
        if outcome.status != "playing":
            games += 1
            if games == GAMES:
                break
            services.rematch_request(code=code, mark="X")
            assert services.rematch_request(code=code, mark="O") is True
            expected_version += 1
            assert room(code).version == expected_version
            continue
        version = row.version
        assert version == expected_version
        mover = rules.to_move(board, services.as_mark(row.opener))
        empty = rules.legal_moves(board)
        # Racers for the mark to move, some on the same cell; with a version,
        # two racers for the other mark too (without one, the other mark's move
        # may rightly land next, at the next version: see the test below).
        opponents = 2 if send_version else 0
        mover_cells = [rng.choice(empty) for _ in range(RACERS - opponents)]
        racers: list[tuple[Mark, int]] = [(mover, cell) for cell in mover_cells]
        racers += [(rules.other(mover), rng.choice(empty)) for _ in range(opponents)]
        rng.shuffle(racers)
        sent = version if send_version else None
        results = race(
            [
                partial(services.move_play, code=code, mark=mark, cell=cell, version=sent)
                for mark, cell in racers
            ]
        )
        rounds += 1
        accepted = [i for i, result in enumerate(results) if isinstance(result, int)]
        assert len(accepted) == 1, (racers, results)
        assert results[accepted[0]] == version + 1
        mark, cell = racers[accepted[0]]
        assert mark == mover
        after = room(code)
        new_board, new_outcome, _ = services.room_outcome(after)
        assert after.version == version + 1
        assert new_board == rules.place(board, cell, mark), "a move was lost or doubled"
        allowed = {"stale_version", "not_your_turn", "cell_taken"}
        if new_outcome.status != "playing":
            allowed.add("game_over")  # the winning move came first: it outranks the rest
        assert set(codes(results)) <= allowed, results
        assert sum(codes(results).values()) == RACERS - 1
        expected_version += 1
    assert room(code).version == expected_version
    assert room(code).games_started == GAMES
    assert rounds >= 5 * GAMES
    if window == "widened":
        assert cas_log.lost > 0, "the widened window never made a compare-and-swap lose"


def test_racing_moves_without_a_version_never_lose_or_double_a_move(
    window: str, cas_log: CasLog
) -> None:
    """Both players hammer moves with no version: every accepted move is on the board once."""
    require_postgres()
    code = "hammer"
    seated(code)
    accepted: list[tuple[Mark, int]] = []
    while True:
        row = room(code)
        board, outcome, _ = services.room_outcome(row)
        if outcome.status != "playing":
            break
        racers = [(mark, cell) for mark in services.MARKS for cell in rules.legal_moves(board)[:4]]
        results = race(
            [
                partial(services.move_play, code=code, mark=mark, cell=cell, version=None)
                for mark, cell in racers
            ]
        )
        wins = sorted(
            (result, racers[i]) for i, result in enumerate(results) if isinstance(result, int)
        )
        # A loser re-reads; when the turn came back to it, its move may land too,
        # but each accepted move has its own version, one after the other.
        assert [new_version for new_version, _ in wins] == list(
            range(row.version + 1, row.version + 1 + len(wins))
        ), results
        assert wins, results
        accepted += [racer for _, racer in wins]
        assert set(codes(results)) <= {"not_your_turn", "cell_taken", "game_over"}, results
    final = room(code)
    board = rules.board_from_str(final.board)
    assert final.version == 2 + len(accepted), "version != seats + accepted moves"
    assert sum(cell is not None for cell in board) == len(accepted)
    assert len({cell for _, cell in accepted}) == len(accepted)
    for mark, cell in accepted:
        assert board[cell] == mark


# --- seats --------------------------------------------------------------------------


def test_racing_joins_seat_exactly_two(window: str, cas_log: CasLog) -> None:
    require_postgres()
    for round_ in range(6):
        code = f"race-join-{round_}"
        channels = [f"{code}-c{i}" for i in range(RACERS)]
        for channel in channels:
            presence.connection_open(code=code, channel_name=channel, replica="r")
        results = race(
            [
                partial(
                    services.seat_join,
                    code=code,
                    channel_name=channel,
                    held=None,
                    name=channel[-2:],
                    token=None,
                )
                for channel in channels
            ]
        )
        grants = [result for result in results if isinstance(result, SeatGrant)]
        assert sorted(grant.mark for grant in grants) == ["O", "X"], results
        assert codes(results) == Counter({"room_full": RACERS - 2})
        row = room(code)
        assert row.version == 2
        for grant in grants:
            winner = channels[results.index(grant)]
            prefix = grant.mark.lower()
            assert getattr(row, f"{prefix}_name") == grant.name == winner[-2:]
            assert getattr(row, f"{prefix}_token_hash") == services.token_hash(grant.token)
            assert Connection.objects.get(channel_name=winner).mark == grant.mark
        assert Connection.objects.filter(room_id=code).exclude(mark="").count() == 2
    if window == "widened":
        assert cas_log.lost > 0


# --- rematch ------------------------------------------------------------------------


@pytest.mark.parametrize("per_mark", [1, 4])
def test_racing_rematch_requests_start_exactly_one_game(
    window: str, cas_log: CasLog, per_mark: int
) -> None:
    require_postgres()
    code = "race-rematch"
    seated(code)
    rng = random.Random(per_mark)
    for _ in range(6):
        finish_game(code, rng)
        before = room(code)
        marks: list[Mark] = ["X", "O"] * per_mark
        rng.shuffle(marks)
        results = race([partial(services.rematch_request, code=code, mark=mark) for mark in marks])
        assert results.count(True) == 1, results
        assert set(codes(results)) <= {"not_over"}, results
        after = room(code)
        assert after.games_started == before.games_started + 1
        assert after.version == before.version + 1
        assert after.board == "." * 9
        assert after.rematch == ""
        assert after.opener == rules.other(services.as_mark(before.opener))


# --- computer opponent --------------------------------------------------------------


def test_racing_bot_play_moves_exactly_once_per_turn(window: str, cas_log: CasLog) -> None:
    require_postgres()
    code = "race-bot"
    seated(code, bot=True)
    rng = random.Random(window)
    bot_moves = 0
    games = 0
    while games < 3:
        row = room(code)
        board, outcome, _ = services.room_outcome(row)
        if outcome.status != "playing":
            games += 1
            assert services.rematch_request(code=code, mark="X") is True  # the bot agrees
            continue
        turn = rules.to_move(board, services.as_mark(row.opener))
        if turn == "X":
            services.move_play(
                code=code, mark="X", cell=rng.choice(rules.legal_moves(board)), version=None
            )
            continue
        version = row.version
        results = race([partial(services.bot_play, code=code, version=version)] * RACERS)
        moved = [result for result in results if result is not None]
        assert moved == [version + 1], results
        after = room(code)
        assert after.version == version + 1
        new_board = rules.board_from_str(after.board)
        assert new_board.count("O") == board.count("O") + 1
        assert new_board.count("X") == board.count("X")
        bot_moves += 1
    assert bot_moves >= 6
    state = room_state(code)
    assert state is not None
    assert state["players"]["O"] is not None


# --- quick match ----------------------------------------------------------------------


def test_racing_pairers_keep_the_line_in_arrival_order() -> None:
    """Several workers pair at once (every `match.pair` job runs `match_pair`): the
    line is still paired two by two in ticket order, each ticket exactly once.
    (Row locks with skip_locked alone interleave: one pairer locks 1, another
    skips it and locks 2, and the line pairs as (1, 3), (2, 4).)"""
    require_postgres()
    for round_ in range(30):
        MatchTicket.objects.all().delete()
        tickets = [
            matchmaking.match_request(name=f"p{i}", channel_name=f"line-{round_}-{i}")
            for i in range(40)
        ]
        made = race([matchmaking.match_pair] * RACERS)
        assert sum(count for count in made if isinstance(count, int)) == 20, made
        rooms = dict(MatchTicket.objects.filter(id__in=tickets).values_list("id", "room_id"))
        pairs = [(rooms[a], rooms[b]) for a, b in zip(tickets[::2], tickets[1::2], strict=True)]
        assert all(first is not None and first == second for first, second in pairs), pairs
        assert len({room for room, _ in pairs}) == 20


def test_a_pairer_waits_for_a_locked_ticket_instead_of_skipping_it() -> None:
    """Another transaction holds the oldest ticket (a pairer mid-statement, a cancel):
    pairing waits for it, then pairs the line in order (skipping it would pair 2 with 3)."""
    require_postgres()
    MatchTicket.objects.all().delete()
    tickets = [matchmaking.match_request(name=f"p{i}", channel_name=f"held-{i}") for i in range(6)]
    holder = psycopg.connect(_dsn())
    try:
        holder.execute("SELECT id FROM game_matchticket WHERE id = %s FOR UPDATE", [tickets[0]])

        def pair() -> None:
            try:
                matchmaking.match_pair()
            finally:
                connection.close()

        pairing = threading.Thread(target=pair)
        pairing.start()
        time.sleep(0.5)
        assert pairing.is_alive()  # waiting for the held ticket, not pairing around it
        holder.rollback()
        pairing.join(RACE_TIMEOUT)
        assert not pairing.is_alive()
    finally:
        holder.close()
    rooms = dict(MatchTicket.objects.filter(id__in=tickets).values_list("id", "room_id"))
    pairs = [(rooms[a], rooms[b]) for a, b in zip(tickets[::2], tickets[1::2], strict=True)]
    assert all(first is not None and first == second for first, second in pairs), pairs


def _dsn() -> str:
    db = connection.settings_dict  # the test database pytest-django made
    return (
        f"host={db['HOST']} port={db['PORT'] or 5432} dbname={db['NAME']} "
        f"user={db['USER']} password={db['PASSWORD']}"
    )
