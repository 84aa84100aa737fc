"""The replicas' PostgreSQL path (game/play.py over game/pgstore.py), on a real PostgreSQL.

A move is planned on the row the replica already holds and costs one statement;
a copy that is behind (a compare-and-swap miss, or a plan that says no) is read
again, so the errors and their order are exactly the ORM services': every
scenario here is played both ways and must answer the same. These tests need
PostgreSQL and FAIL (never skip) elsewhere: `make test-postgres` runs them.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections

from game import play, presence, results, services
from game.exceptions import GameError
from game.models import GameResult
from game.pgstore import PgStore, conninfo
from game.rooms import Presence, RoomRow, Write
from game.rules import Mark

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

REPLICA = "web-fast-1"


@dataclass
class Spy:
    """Counts the statements a store sends."""

    reads: int = 0
    writes: int = 0
    misses: int = 0


@dataclass
class Stores:
    spy: Spy = field(default_factory=Spy)
    opened: list[PgStore] = field(default_factory=list)

    def new(self) -> PgStore:
        """Another replica's store: a pool of its own."""
        store = PgStore(conninfo(), max_size=2)
        self.opened.append(store)
        return store


@pytest.fixture
async def stores(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stores]:
    assert connection.vendor == "postgresql", (
        "tests/game/test_pg_fast_path.py needs PostgreSQL: run it with "
        "DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres (make test-postgres)"
    )
    found = Stores()
    read, apply = PgStore.read, PgStore.apply

    async def counting_read(self: PgStore, code: str) -> RoomRow | None:
        found.spy.reads += 1
        return await read(self, code)

    async def counting_apply(self: PgStore, row: RoomRow, write: Write, **kw: Any) -> Any:
        found.spy.writes += 1
        after = await apply(self, row, write, **kw)
        if after is None:
            found.spy.misses += 1
        return after

    monkeypatch.setattr(PgStore, "read", counting_read)
    monkeypatch.setattr(PgStore, "apply", counting_apply)
    try:
        yield found
    finally:
        for store in found.opened:
            await store.close()
        await play.close_store()
        await sync_to_async(connections.close_all)()


async def seated(code: str) -> tuple[str, str]:
    """A room with ana (X) and bo (O) seated through the fast path; their tokens."""
    tokens = []
    for name in ("ana", "bo"):
        channel = f"{code}-{name}"
        await play.open_connection(code=code, channel_name=channel, replica=REPLICA)
        applied = await play.join(code=code, channel_name=channel, held=None, name=name, token=None)
        tokens.append(applied.write.token)
    return tokens[0], tokens[1]


async def current(code: str) -> RoomRow:
    found = await play.view(code)
    assert found is not None
    return found[0]


# --- one statement in the common case -------------------------------------------------


async def test_a_move_on_the_current_row_is_one_statement_and_no_read(stores: Stores) -> None:
    await seated("one")
    known = await current("one")
    stores.spy.reads = stores.spy.writes = 0
    applied = await play.move(holder=None, code="one", mark="X", cell=4, version=None, known=known)
    assert (stores.spy.reads, stores.spy.writes, stores.spy.misses) == (0, 1, 0)
    assert applied.row.version == known.version + 1
    assert applied.row.board == "....X...."
    assert applied.row == await current("one")  # RETURNING gave the stored row


async def test_a_copy_behind_misses_once_then_rereads_and_lands(stores: Stores) -> None:
    await seated("behind")
    stale = await current("behind")
    await play.move(holder=None, code="behind", mark="X", cell=0, version=None, known=stale)
    await play.move(holder=None, code="behind", mark="O", cell=3, version=None, known=None)
    stores.spy.reads = stores.spy.writes = stores.spy.misses = 0
    # The copy is two versions behind and says it is X's turn: that is true again now,
    # so the swap misses on the version, the row is read again and the move lands.
    applied = await play.move(
        holder=None, code="behind", mark="X", cell=1, version=None, known=stale
    )
    assert (stores.spy.reads, stores.spy.writes, stores.spy.misses) == (1, 2, 1)
    assert applied.row.board == "XX.O....."
    assert applied.row.version == stale.version + 3


async def test_a_copy_behind_never_turns_into_a_wrong_error(stores: Stores) -> None:
    """The copy says "not your turn" (O moved since); the current row says it is X's."""
    await seated("wrong")
    await play.move(holder=None, code="wrong", mark="X", cell=0, version=None, known=None)
    after_x = await current("wrong")
    await play.move(holder=None, code="wrong", mark="O", cell=3, version=None, known=after_x)
    stores.spy.reads = 0
    applied = await play.move(
        holder=None, code="wrong", mark="X", cell=1, version=None, known=after_x
    )
    assert applied.row.board == "XX.O....."
    assert stores.spy.reads == 1  # the error the copy suggested was checked on a fresh row


async def test_a_finishing_move_writes_its_result_in_the_same_statement(stores: Stores) -> None:
    await seated("fin")
    known = await current("fin")
    script: list[tuple[Mark, int]] = [("X", 0), ("O", 3), ("X", 1), ("O", 4)]
    for mark, cell in script:
        known = (
            await play.move(
                holder=None, code="fin", mark=mark, cell=cell, version=None, known=known
            )
        ).row
    stores.spy.writes = stores.spy.reads = 0
    applied = await play.move(holder=None, code="fin", mark="X", cell=2, version=None, known=known)
    assert (stores.spy.reads, stores.spy.writes) == (0, 1)
    assert applied.finished_key == f"fin:{applied.row.version}"
    result = await GameResult.objects.aget(key=applied.finished_key)
    assert (result.x_name, result.o_name, result.winner, result.counted) == (
        "ana",
        "bo",
        "X",
        False,
    )


# --- the protocol's error order, the same as the ORM services' -------------------------

# (moves before, the move tried, the version the client sends: None, "current" or "old")
SCENARIOS: list[tuple[str, list[tuple[Mark, int]], tuple[Mark | None, object], str | None]] = [
    ("not_joined first", [], (None, 99), "old"),
    (
        "bad_cell before game_over",
        [("X", 0), ("O", 3), ("X", 1), ("O", 4), ("X", 2)],
        ("O", 9),
        None,
    ),
    (
        "game_over before stale_version",
        [("X", 0), ("O", 3), ("X", 1), ("O", 4), ("X", 2)],
        ("O", 5),
        "old",
    ),
    ("stale_version before not_your_turn", [("X", 0)], ("X", 1), "old"),
    ("not_your_turn before cell_taken", [("X", 0)], ("X", 0), "current"),
    ("cell_taken", [("X", 0)], ("O", 0), "current"),
    ("accepted with the current version", [("X", 0)], ("O", 4), "current"),
    ("accepted without a version", [], ("X", 8), None),
]


def _version(sent: str | None, now: int) -> int | None:
    return None if sent is None else now if sent == "current" else now - 1


async def _outcome_fast(
    code: str,
    moves: list[tuple[Mark, int]],
    tried: Any,
    sent: Any,
    known_of: Callable[[RoomRow, RoomRow], RoomRow],
) -> str:
    await seated(code)
    first = await current(code)
    for mark, cell in moves:
        await play.move(holder=None, code=code, mark=mark, cell=cell, version=None, known=None)
    now = await current(code)
    mark, cell = tried
    try:
        applied = await play.move(
            holder=None,
            code=code, mark=mark, cell=cell, version=_version(sent, now.version),
            known=known_of(first, now),
        )  # fmt: skip
    except GameError as error:
        return error.code
    return f"v{applied.row.version - now.version}"


def _outcome_orm(code: str, moves: list[tuple[Mark, int]], tried: Any, sent: Any) -> str:
    for name in ("ana", "bo"):
        presence.connection_open(code=code, channel_name=f"{code}-{name}", replica=REPLICA)
        services.seat_join(
            code=code, channel_name=f"{code}-{name}", held=None, name=name, token=None
        )
    for mark, cell in moves:
        services.move_play(code=code, mark=mark, cell=cell, version=None)
    now = services.read_row(code).version
    mark, cell = tried
    try:
        after = services.move_play(code=code, mark=mark, cell=cell, version=_version(sent, now))
    except GameError as error:
        return error.code
    return f"v{after - now}"


@pytest.mark.parametrize(
    ("title", "moves", "tried", "sent"), SCENARIOS, ids=[s[0] for s in SCENARIOS]
)
@pytest.mark.parametrize("copy", ["current", "behind", "none"])
async def test_the_fast_path_answers_exactly_as_the_orm_services(
    stores: Stores, title: str, moves: Any, tried: Any, sent: Any, copy: str
) -> None:
    """Planned on the current row, on a copy from before the game started, or on none."""
    known_of: Callable[[RoomRow, RoomRow], Any] = {
        "current": lambda first, now: now,
        "behind": lambda first, now: first,
        "none": lambda first, now: None,
    }[copy]
    fast = await _outcome_fast(f"f-{copy}", moves, tried, sent, known_of)
    orm = await sync_to_async(_outcome_orm)(f"o-{copy}", moves, tried, sent)
    assert fast == orm, title


# --- races between replicas --------------------------------------------------------------


@pytest.mark.parametrize("send_version", [True, False])
async def test_replicas_racing_for_one_turn_accept_exactly_one_move(
    stores: Stores, send_version: bool
) -> None:
    """Eight replicas' stores, all planning on the same row, send a move for the same turn
    at once, for four turns: one lands; the others get the error the new row calls for."""
    racers = [stores.new() for _ in range(8)]
    await seated(f"race-{send_version}")
    code = f"race-{send_version}"
    for turn in range(4):
        known = await current(code)
        mark: Mark = "X" if turn % 2 == 0 else "O"
        free = [i for i, c in enumerate(known.board) if c == "."]
        start = asyncio.Event()

        async def one(
            store: PgStore,
            cell: int,
            known: RoomRow = known,
            mark: Mark = mark,
            start: asyncio.Event = start,
        ) -> Any:
            await start.wait()
            version = known.version if send_version else None
            try:
                return await play.move(
                    holder=None,
                    code=code,
                    mark=mark,
                    cell=cell,
                    version=version,
                    known=known,
                    via=store,
                )
            except GameError as error:
                return error.code

        tasks = [
            asyncio.create_task(one(store, free[i % len(free)])) for i, store in enumerate(racers)
        ]
        await asyncio.sleep(0)
        start.set()
        results = await asyncio.gather(*tasks)
        landed = [r for r in results if not isinstance(r, str)]
        refused = Counter(r for r in results if isinstance(r, str))
        assert len(landed) == 1, results
        allowed = {"stale_version"} if send_version else {"not_your_turn", "cell_taken"}
        assert set(refused) <= allowed, refused
        after = await current(code)
        assert after.version == known.version + 1
        assert after.board.count(mark) == known.board.count(mark) + 1


# --- batches: many sockets' statements in one pipeline ----------------------------------


async def batch_of_rooms(store: PgStore, prefix: str, n: int) -> dict[str, RoomRow]:
    """n seated rooms, and the store's pool open, so that nothing below waits on it."""
    codes = [f"{prefix}-{i}" for i in range(n)]
    for code in codes:
        await seated(code)
    await store.read(codes[0])
    return {code: await current(code) for code in codes}


async def test_moves_of_many_rooms_at_once_share_a_pipeline_and_each_gets_its_row(
    stores: Stores,
) -> None:
    store = stores.new()
    known = await batch_of_rooms(store, "pipe", 12)
    batches, statements = store.batcher.batches, store.batcher.statements
    applied = await asyncio.gather(
        *(
            play.move(
                holder=None, code=code, mark="X", cell=i % 9, version=None, known=row, via=store
            )
            for i, (code, row) in enumerate(known.items())
        )
    )
    assert store.batcher.statements - statements == 12
    assert store.batcher.batches - batches < 12  # statements shared a pipeline
    for i, ((code, row), landed) in enumerate(zip(known.items(), applied, strict=True)):
        assert landed.row.code == code
        assert landed.row.version == row.version + 1
        assert landed.row.board == "." * (i % 9) + "X" + "." * (8 - i % 9)
        assert landed.row == await current(code)


async def test_a_statement_that_fails_in_a_pipeline_fails_alone(stores: Stores) -> None:
    """The pipeline is one transaction: its statements are run again one by one, so the
    failure reaches its own caller and every other move lands exactly once."""
    store = stores.new()
    known = await batch_of_rooms(store, "fail", 6)
    moves = [
        play.move(holder=None, code=code, mark="X", cell=4, version=None, known=row, via=store)
        for code, row in known.items()
    ]
    broken = store.batcher.run("fail-3", "SELECT 1 / 0", {})
    *applied, error = await asyncio.gather(*moves, broken, return_exceptions=True)
    assert isinstance(error, psycopg.errors.DivisionByZero)
    for (code, row), landed in zip(known.items(), applied, strict=True):
        assert not isinstance(landed, BaseException), landed
        assert landed.row.version == row.version + 1
        assert (await current(code)).board == "....X...."


async def test_moves_for_one_turn_in_one_pipeline_land_once(stores: Stores) -> None:
    """Eight moves for the same turn through one store go out together: the first in the
    pipeline lands, the later ones miss, read the new row and get its error."""
    store = stores.new()
    known = (await batch_of_rooms(store, "turn", 1))["turn-0"]
    results = await asyncio.gather(
        *(
            play.move(
                holder=None,
                code="turn-0",
                mark="X",
                cell=cell,
                version=known.version,
                known=known,
                via=store,
            )
            for cell in range(8)
        ),
        return_exceptions=True,
    )
    landed = [r for r in results if not isinstance(r, BaseException)]
    refused = Counter(r.code for r in results if isinstance(r, GameError))
    assert len(landed) == 1, results
    assert refused == {"stale_version": 7}
    assert (await current("turn-0")).version == known.version + 1


async def test_seat_join_and_token_reclaim_through_the_fast_path(stores: Stores) -> None:
    x_token, _ = await seated("seats")
    await play.open_connection(code="seats", channel_name="seats-tab2", replica=REPLICA)
    reclaimed = await play.join(
        code="seats", channel_name="seats-tab2", held=None, name="ignored", token=x_token
    )
    assert reclaimed.write.seat == "X"
    assert not reclaimed.changed  # reclaiming a seat changes no room column
    with pytest.raises(GameError) as error:
        await play.join(code="seats", channel_name="seats-3", held=None, name="c", token="nope")
    assert error.value.code == "bad_token"
    found = await play.view("seats")
    assert found is not None
    assert found[1].public()[:3] == (2, 1, 0)  # both tabs hold X


async def test_sockets_racing_into_a_new_room_all_get_it(stores: Stores) -> None:
    """Twenty sockets on eight replicas connect to a room nobody has opened yet.

    Exactly one created it, and every other one counted the creator: the creator
    broadcasts no presence of its own (nobody was there to tell), so the others'
    broadcasts must carry it."""
    racers = [stores.new() for _ in range(8)]
    start = asyncio.Event()

    async def one(i: int) -> tuple[RoomRow, Presence, bool]:
        await start.wait()
        return await racers[i % len(racers)].open_connection(
            code="fresh", channel_name=f"fresh-{i}", replica=REPLICA
        )

    tasks = [asyncio.create_task(one(i)) for i in range(20)]
    await asyncio.sleep(0)
    start.set()
    opened = await asyncio.gather(*tasks)
    assert {row.version for row, _, _ in opened} == {0}
    assert sum(created for _, _, created in opened) == 1
    assert all(presence.spectators >= 2 for _, presence, created in opened if not created)
    found = await play.view("fresh")
    assert found is not None
    assert found[1].public()[:3] == (0, 0, 20)


# --- the leaderboard: one statement per finished game ------------------------------------

# (x name, o name, x is the computer, o is the computer, winner)
RESULTS: list[tuple[str, str, bool, bool, str]] = [
    ("ana", "bo", False, False, "X"),
    ("ana", "bo", False, False, "X"),
    ("bo", "ana", False, False, ""),
    ("ana", "Computer", False, True, "X"),
    ("Computer", "bo", True, False, "X"),
    ("bo", "ana", False, False, "X"),
    ("ana", "ana", False, False, "O"),  # both seats under one name: a win and a loss
    ("ana", "bo", False, False, "X"),
    ("cy", "ana", False, False, "O"),
]


async def _results(prefix: str) -> list[str]:
    from game.models import Room

    room = await Room.objects.acreate(code=f"{prefix}-lb")
    keys = []
    for i, (x, o, x_bot, o_bot, winner) in enumerate(RESULTS):
        result = await GameResult.objects.acreate(
            key=f"{room.code}:{i}",
            room=room,
            x_name=f"{prefix}-{x}",
            o_name=f"{prefix}-{o}",
            x_bot=x_bot,
            o_bot=o_bot,
            winner=winner,
        )
        keys.append(result.key)
    return keys


async def _board(prefix: str) -> dict[str, tuple[int, int, int, int, int]]:
    from game.models import LeaderboardEntry

    return {
        entry.name.removeprefix(prefix + "-"): (
            entry.wins,
            entry.losses,
            entry.draws,
            entry.streak,
            entry.best_streak,
        )
        async for entry in LeaderboardEntry.objects.filter(name__startswith=prefix + "-")
    }


async def test_a_finished_game_is_counted_in_one_statement_exactly_as_the_orm_counts_it(
    stores: Stores,
) -> None:
    """The same games counted by the async statement and by the ORM service give the same
    leaderboard; a second count of any game changes nothing."""
    fast, orm = await _results("fast"), await _results("orm")
    pg = stores.new()
    for key in fast:
        assert await pg.count_result(key=key) is True
        assert await pg.count_result(key=key) is False  # a redelivered job
    for key in orm:
        assert await sync_to_async(results.result_count)(key=key) is True
        assert await sync_to_async(results.result_count)(key=key) is False
    expected = {
        # wins, losses, draws, streak, best streak
        "ana": (6, 2, 1, 2, 2),
        "bo": (1, 4, 1, 0, 1),
        "cy": (0, 1, 0, 0, 0),
    }
    assert await _board("fast") == expected
    assert await _board("orm") == expected
    assert await GameResult.objects.filter(counted=False).acount() == 0


async def test_games_of_the_same_players_counted_at_once_lose_nothing(stores: Stores) -> None:
    """Concurrent counts on several pools (as several workers would) add up exactly."""
    from game.models import Room

    room = await Room.objects.acreate(code="many-lb")
    keys = []
    for i in range(60):
        x, o = ("many-a", "many-b") if i % 2 else ("many-b", "many-a")
        result = await GameResult.objects.acreate(
            key=f"many-lb:{i}", room=room, x_name=x, o_name=o, winner="X" if i % 3 else ""
        )
        keys.append(result.key)
    pools = [stores.new() for _ in range(3)]
    counted = await asyncio.gather(
        *(pools[i % 3].count_result(key=key) for i, key in enumerate(keys * 2))
    )
    assert sum(counted) == 60
    board = await _board("many")
    draws = sum(1 for i in range(60) if i % 3 == 0)
    assert board["a"][2] == board["b"][2] == draws
    assert board["a"][0] + board["b"][0] == 60 - draws
    assert board["a"][0] + board["a"][1] + draws == 60
