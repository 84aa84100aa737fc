"""The move path's statements of many sockets, sent to PostgreSQL together (game/pgstore.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from psycopg_pool import AsyncConnectionPool

_Item = tuple[str, str, dict[str, Any], "asyncio.Future[Any]"]


class Batcher:
    """Writes and reads of many sockets, sent to PostgreSQL as one pipeline.

    A statement that arrives while every sender is busy waits for the next free one,
    which sends everything waiting (up to `MAX`) in pipeline mode with one Sync: one
    write and one read of the socket, and one transaction, so one commit for the lot.
    At low load each batch holds one statement, as before; under load the batches grow
    and the cost per statement falls, here and in PostgreSQL (`python -m bench.drivers`
    measures it). Statements are sent in room order, so
    two replicas' batches lock rooms in the same order. If any statement fails, the
    whole transaction rolls back and every statement of the batch runs again alone, so
    one failure reaches only its own caller.
    """

    MAX = 32

    def __init__(self, pool: AsyncConnectionPool, senders: int) -> None:
        self._pool = pool
        self._senders = senders
        self._busy = 0
        self.batches = 0  # pipelines (and single statements) sent, for tests and probes
        self.statements = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting: list[_Item] = []

    async def run(self, order: str, statement: str, params: dict[str, Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((order, statement, params, future))
        if self._busy < self._senders:
            self._busy += 1
            task = asyncio.create_task(self._send())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _send(self) -> None:
        try:
            while self._waiting:
                batch = sorted(self._waiting[: self.MAX], key=lambda item: item[0])
                del self._waiting[: self.MAX]
                self.batches += 1
                self.statements += len(batch)
                try:
                    rows = await self._pipeline(batch)
                except Exception as error:
                    if len(batch) == 1:
                        _settle(batch[0][3], error=error)
                    else:
                        await self._alone(batch)
                    continue
                except BaseException:  # cancelled with the loop: nobody waits forever
                    for *_, future in [*batch, *self._waiting]:
                        future.cancel()
                    raise
                for (*_, future), values in zip(batch, rows, strict=True):
                    _settle(future, values)
        finally:
            self._busy -= 1

    async def _pipeline(self, batch: list[_Item]) -> list[tuple[Any, ...] | None]:
        async with self._pool.connection() as conn:
            if len(batch) == 1:
                cursor = await conn.execute(batch[0][1], batch[0][2])
                return [await cursor.fetchone()]
            try:
                async with conn.pipeline() as pipeline:
                    cursors = []
                    for _, statement, params, _ in batch:
                        cursor = conn.cursor()
                        await cursor.execute(statement, params)
                        cursors.append(cursor)
                    await pipeline.sync()
                    return [await cursor.fetchone() for cursor in cursors]
            except Exception:
                # After an error the server skips the rest of the pipeline, statements
                # psycopg counts as prepared included: the pool replaces this connection.
                await conn.close()
                raise

    async def _alone(self, batch: list[_Item]) -> None:
        for _, statement, params, future in batch:
            try:
                async with self._pool.connection() as conn:
                    cursor = await conn.execute(statement, params)
                    _settle(future, await cursor.fetchone())
            except Exception as error:
                _settle(future, error=error)


def _settle(
    future: asyncio.Future[Any], values: Any = None, *, error: Exception | None = None
) -> None:
    """Answer a waiting caller, unless it stopped waiting (its socket closed)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(values)
