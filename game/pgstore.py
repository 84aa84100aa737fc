"""The replica's async path to PostgreSQL for the hot statements: no thread hop.

Django's ORM is synchronous underneath, so every ORM call from a consumer goes
through `database_sync_to_async`'s one thread per replica; moves queued behind
it. This store runs the few statements on the move, seat and presence path on
psycopg 3's `AsyncConnection`s from a `psycopg_pool` pool, in autocommit mode:
each write is ONE statement (a compare-and-swap `UPDATE ... RETURNING`, with
the finished game's result row and the writer's seat in the same statement
through data-modifying CTEs), so a move costs one round trip. Under load the
moves and reads of many sockets share that round trip: `Batcher` (pgbatch.py)
sends what waits as one pipeline and one transaction. psycopg prepares a
statement on a connection after its fifth use. The ORM keeps everything else
(migrations, the worker fleet's results, quick match, the admin views).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import psycopg
from django.conf import settings
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from .pgbatch import Batcher
from .rooms import COLUMNS, EMPTY_BOARD_TEXT, Presence, RoomRow, Write, result_key

ROW = sql.SQL(", ").join(sql.Identifier(column) for column in COLUMNS)

READ = (
    sql.SQL(
        """
    SELECT {row}, p.x, p.o, p.s, extract(epoch FROM clock_timestamp())::float8
    FROM game_room r CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE c.mark = 'X') AS x,
               count(*) FILTER (WHERE c.mark = 'O') AS o,
               count(*) FILTER (WHERE c.mark = '') AS s
        FROM game_connection c JOIN game_replica h ON h.name = c.replica_id
        WHERE c.room_id = r.code AND h.heartbeat_at >= now() - make_interval(secs => %(timeout)s)
    ) p
    WHERE r.code = %(code)s
    """
    )
    .format(row=sql.SQL(", ").join(sql.SQL("r.") + sql.Identifier(c) for c in COLUMNS))
    .as_string(None)
)

READ_ROW = (
    sql.SQL("SELECT {row} FROM game_room WHERE code = %(code)s").format(row=ROW).as_string(None)
)

# A seat reclaimed with its token: only while the seat is still the token's (a release
# committed meanwhile turns the socket into a spectator: no rows, `bad_token`).
SEAT = sql.SQL(
    """
    UPDATE game_connection SET mark = %(mark)s
    WHERE channel_name = %(channel)s AND EXISTS (
        SELECT 1 FROM game_room WHERE code = %(code)s
          AND CASE %(mark)s WHEN 'X' THEN x_token_hash ELSE o_token_hash END = %(hash)s)
    RETURNING 1
    """
)


OPEN = (
    sql.SQL(
        """
    WITH replica AS (
        INSERT INTO game_replica (name, heartbeat_at) VALUES (%(replica)s, now())
        ON CONFLICT (name) DO NOTHING
    ), created AS (
        INSERT INTO game_room (code, version, board, opener, x_name, x_token_hash, x_bot,
                               o_name, o_token_hash, o_bot, rematch, games_started,
                               created_at, updated_at)
        VALUES (%(code)s, 0, %(board)s, 'X', '', '', '', '', '', '', '', 1, now(), now())
        ON CONFLICT (code) DO NOTHING
        RETURNING {row}
    ), joined AS (
        INSERT INTO game_connection (channel_name, room_id, replica_id, mark, connected_at)
        VALUES (%(channel)s, %(code)s, %(replica)s, '', now())
        ON CONFLICT (channel_name) DO UPDATE
        SET room_id = EXCLUDED.room_id, replica_id = EXCLUDED.replica_id
    )
    SELECT {row}, p.x, p.o, p.s + 1, extract(epoch FROM clock_timestamp())::float8,
           EXISTS (SELECT 1 FROM created)
    FROM (SELECT {row} FROM created UNION ALL SELECT {row} FROM game_room WHERE code = %(code)s) r
    CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE c.mark = 'X') AS x,
               count(*) FILTER (WHERE c.mark = 'O') AS o,
               count(*) FILTER (WHERE c.mark = '') AS s
        FROM game_connection c JOIN game_replica h ON h.name = c.replica_id
        WHERE c.room_id = %(code)s AND c.channel_name <> %(channel)s
          AND h.heartbeat_at >= now() - make_interval(secs => %(timeout)s)
    ) p
    """
    )
    .format(row=ROW)
    .as_string(None)
)

VERSIONS = "SELECT code, version FROM game_room WHERE code = ANY(%(codes)s)"

CLOSE = sql.SQL(
    """
    WITH ticket AS (
        DELETE FROM game_matchticket WHERE channel_name = %(channel)s AND room_id IS NULL
    ), gone AS (
        DELETE FROM game_connection WHERE channel_name = %(channel)s RETURNING room_id, mark
    ), away AS (
        UPDATE game_room r
        SET x_away_since = CASE WHEN g.mark = 'X' THEN now() ELSE r.x_away_since END,
            o_away_since = CASE WHEN g.mark = 'O' THEN now() ELSE r.o_away_since END
        FROM gone g WHERE r.code = g.room_id AND g.mark <> ''
    )
    SELECT count(*) FROM gone
    """
)


# A finished game onto the leaderboard, once: the result row flips to `counted` and
# both players' rows change in the same statement, so a redelivered job counts
# nothing. Rows are written in name order (no deadlock between two games of the
# same players); a game against yourself counts a win and a loss and ends the
# streak (results.tally, the ORM path, does the same).
COUNT_RESULT = """
    WITH counted AS (
        UPDATE game_gameresult SET counted = true WHERE key = %(key)s AND NOT counted
        RETURNING x_name, o_name, x_bot, o_bot, winner
    ), verdicts AS (
        SELECT x_name AS name, winner = 'X' AS won, winner = 'O' AS lost FROM counted
        WHERE NOT x_bot
        UNION ALL
        SELECT o_name, winner = 'O', winner = 'X' FROM counted WHERE NOT o_bot
    ), tally AS (
        SELECT name, count(*) FILTER (WHERE won) AS w, count(*) FILTER (WHERE lost) AS l,
               count(*) FILTER (WHERE NOT won AND NOT lost) AS d
        FROM verdicts GROUP BY name
    ), board AS (
        INSERT INTO game_leaderboardentry AS e
            (name, wins, losses, draws, streak, best_streak, updated_at)
        SELECT name, w, l, d, CASE WHEN l + d = 0 THEN w ELSE 0 END,
               CASE WHEN l + d = 0 THEN w ELSE 0 END, now()
        FROM tally ORDER BY name
        ON CONFLICT (name) DO UPDATE SET
            wins = e.wins + EXCLUDED.wins,
            losses = e.losses + EXCLUDED.losses,
            draws = e.draws + EXCLUDED.draws,
            streak = CASE WHEN EXCLUDED.losses + EXCLUDED.draws = 0
                          THEN e.streak + EXCLUDED.wins ELSE 0 END,
            best_streak = greatest(e.best_streak, CASE WHEN EXCLUDED.losses + EXCLUDED.draws = 0
                                                       THEN e.streak + EXCLUDED.wins ELSE 0 END),
            updated_at = now()
    )
    SELECT count(*) FROM counted
"""


def conninfo() -> str:
    """Django's database settings as a libpq connection string."""
    db = settings.DATABASES["default"]
    params = {
        "dbname": db.get("NAME"),
        "user": db.get("USER"),
        "password": db.get("PASSWORD"),
        "host": db.get("HOST"),
        "port": db.get("PORT"),
    }
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items() if v})


@cache
def _write_statement(
    columns: tuple[str, ...],
    bump: bool,
    new_game: bool,
    rematch_guard: bool,
    finished: bool,
    seat: bool,
    vacated: bool,
) -> str:
    """One statement per shape of write (a handful in all), rendered once: psycopg
    prepares it on a connection after its fifth use."""
    sets: list[sql.Composable] = [
        sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder("v_" + c)) for c in columns
    ]
    if bump:
        sets += [sql.SQL("version = version + 1"), sql.SQL("updated_at = now()")]
    if new_game:
        sets.append(sql.SQL("games_started = games_started + 1"))
    guard = sql.SQL(" AND rematch = %(rematch_was)s") if rematch_guard else sql.SQL("")
    parts: list[sql.Composable] = [
        sql.SQL(
            "WITH moved AS (UPDATE game_room SET {sets} WHERE code = %(code)s"
            " AND version = %(version)s{guard} RETURNING {row})"
        ).format(sets=sql.SQL(", ").join(sets), guard=guard, row=ROW)
    ]
    if finished:
        parts.append(
            sql.SQL(
                ", result AS (INSERT INTO game_gameresult"
                " (key, room_id, x_name, o_name, x_bot, o_bot, winner, finished_at, counted)"
                " SELECT %(key)s, code, %(x_name)s, %(o_name)s, %(x_bot)s, %(o_bot)s,"
                " %(winner)s, now(), false FROM moved)"
            )
        )
    if seat:
        parts.append(
            sql.SQL(
                ", seat AS (UPDATE game_connection SET mark = %(mark)s"
                " WHERE channel_name = %(channel)s AND EXISTS (SELECT 1 FROM moved))"
            )
        )
    if vacated:
        parts.append(
            sql.SQL(
                ", vacated AS (UPDATE game_connection SET mark = ''"
                " WHERE room_id = %(code)s AND mark = %(vacated)s"
                " AND EXISTS (SELECT 1 FROM moved))"
            )
        )
    parts.append(sql.SQL(" SELECT {row} FROM moved").format(row=ROW))
    return sql.Composed(parts).as_string(None)


def _row(values: tuple[Any, ...]) -> RoomRow:
    return RoomRow(*values[: len(COLUMNS)])


class PgStore:
    """A pool of autocommit connections on one event loop; the move path's statements
    go through `Batcher`, the rest one statement per connection."""

    def __init__(self, dsn: str, *, max_size: int) -> None:
        self.pool = AsyncConnectionPool(
            dsn, min_size=1, max_size=max_size, open=False, kwargs={"autocommit": True}
        )
        self._opened = False
        self.batcher = Batcher(self.pool, senders=max_size)

    async def _ready(self) -> AsyncConnectionPool:
        if not self._opened:
            self._opened = True
            await self.pool.open()
        return self.pool

    async def close(self) -> None:
        if self._opened:
            await self.pool.close()

    async def _one(
        self, statement: str | sql.SQL, params: dict[str, Any]
    ) -> tuple[Any, ...] | None:
        """Run one statement on a pooled connection; its first row, if any."""
        pool = await self._ready()
        async with pool.connection() as conn:
            cursor = await conn.execute(statement, params)
            return await cursor.fetchone()

    async def _batched(
        self, code: str, statement: str, params: dict[str, Any]
    ) -> tuple[Any, ...] | None:
        """Run one statement of room `code` in the next batch; its first row, if any."""
        await self._ready()
        values: tuple[Any, ...] | None = await self.batcher.run(code, statement, params)
        return values

    async def read(self, code: str) -> RoomRow | None:
        values = await self._batched(code, READ_ROW, {"code": code})
        return None if values is None else _row(values)

    async def view(self, code: str) -> tuple[RoomRow, Presence] | None:
        """The room row and its presence (live replicas only), in one statement."""
        params = {"code": code, "timeout": float(settings.PRESENCE_TIMEOUT_SECONDS)}
        values = await self._one(READ, params)
        if values is None:
            return None
        return _row(values), Presence.from_public(values[len(COLUMNS) :])

    async def apply(
        self, row: RoomRow, write: Write, *, channel_name: str | None = None
    ) -> RoomRow | None:
        """Apply `write` iff the room is still at `row.version`: the row it left, or None."""
        pool = await self._ready()
        seat = write.seat is not None and channel_name is not None
        if not write.changes and not write.bump:  # a seat reclaimed with its token
            if seat:
                assert write.seat is not None
                reclaim = {
                    "mark": write.seat,
                    "channel": channel_name,
                    "code": row.code,
                    "hash": row.seat(write.seat).token_hash,
                }
                async with pool.connection() as conn:
                    cursor = await conn.execute(SEAT, reclaim)
                    if await cursor.fetchone() is None:
                        return None  # released meanwhile: the caller re-reads
            return row
        changes = dict(write.changes)
        params: dict[str, Any] = {"v_" + column: value for column, value in changes.items()}
        params.update(code=row.code, version=row.version, rematch_was=write.rematch_was)
        if write.finished is not None:
            params.update(
                key=result_key(row.code, row.version + 1),
                winner=write.finished.winner or "",
                x_name=row.x_name,
                o_name=row.o_name,
                x_bot=bool(row.x_bot),
                o_bot=bool(row.o_bot),
            )
        if seat:
            params.update(mark=write.seat, channel=channel_name)
        if write.vacated is not None:
            params["vacated"] = write.vacated
        statement = _write_statement(
            tuple(changes),
            write.bump,
            write.new_game,
            write.rematch_was is not None,
            write.finished is not None,
            seat,
            write.vacated is not None,
        )
        values = await self._batched(row.code, statement, params)
        return None if values is None else _row(values)

    async def open_connection(
        self, *, code: str, channel_name: str, replica: str
    ) -> tuple[RoomRow, Presence, bool]:
        """Create the room if it is new, register the socket, and read the room with its
        presence (this socket included as a spectator): one statement. The flag says
        this socket created the room."""
        pool = await self._ready()
        params = {
            "code": code,
            "channel": channel_name,
            "replica": replica,
            "board": EMPTY_BOARD_TEXT,
            "timeout": float(settings.PRESENCE_TIMEOUT_SECONDS),
        }
        async with pool.connection() as conn:
            for _ in range(3):
                try:
                    cursor = await conn.execute(OPEN, params)
                except psycopg.errors.ForeignKeyViolation:
                    # The workers removed the (empty, idle) room as this socket came:
                    # the next run creates it again.
                    continue
                values = await cursor.fetchone()
                if values is not None:
                    break
                # Another socket created the room after this statement's snapshot was
                # taken (its insert won, ours did nothing): the next run sees the room.
            else:
                raise LookupError(f"room {code!r} neither created nor found")
        presence = Presence.from_public(values[len(COLUMNS) : len(COLUMNS) + 4])
        return _row(values), presence, bool(values[-1])

    async def versions(self, codes: list[str]) -> dict[str, int]:
        """The current version of each of these rooms (gone rooms left out): one statement."""
        pool = await self._ready()
        async with pool.connection() as conn:
            cursor = await conn.execute(VERSIONS, {"codes": codes})
            rows: list[tuple[str, int]] = await cursor.fetchall()
            return dict(rows)

    async def count_result(self, *, key: str) -> bool:
        """Apply one finished game to the leaderboard, once: True if it was counted now."""
        values = await self._one(COUNT_RESULT, {"key": key})
        return bool(values and values[0])

    async def close_connection(self, *, channel_name: str) -> bool:
        """Forget a socket and its place in the quick-match line; True if it was known."""
        values = await self._one(CLOSE, {"channel": channel_name})
        return bool(values and values[0])
