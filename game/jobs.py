"""Background work of the game: results and leaderboard, computer moves, quick match.

With `RABBITMQ_URL` set the jobs go to the worker fleet (workers/, started by
`python manage.py run_workers`); in the embedded mode the same handlers run
in this process. Every handler is idempotent by its job key, and the workers'
periodic sweep redoes anything whose job was lost (a replica died between its
commit and its publish), so nothing accepted is ever dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from functools import cache
from typing import Any

from django.conf import settings

from . import lifecycle, matchmaking, play, results, services, signals
from .aio import call
from .rooms import Applied, Presence, RoomRow

log = logging.getLogger(__name__)

GAME_FINISHED = "game.finished"
BOT_MOVE = "bot.move"
MATCH_PAIR = "match.pair"
KINDS = (GAME_FINISHED, BOT_MOVE, MATCH_PAIR)

# Tasks this process started for jobs (handlers in the embedded mode, publishes
# that follow a socket's write); kept so they are not garbage-collected mid-way.
_local: set[asyncio.Task[None]] = set()


def _spawn(work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(work)
    _local.add(task)
    task.add_done_callback(_local.discard)


@cache
def publisher() -> Any:
    from workers.publisher import JobPublisher

    return JobPublisher(
        settings.RABBITMQ_URL,
        kinds=KINDS,
        retry_delays=settings.JOB_RETRY_DELAYS,
        delivery_limit=settings.JOB_DELIVERY_LIMIT,
        timeout=settings.LAYER_PUBLISH_TIMEOUT_SECONDS,
    )


async def dispatch(kind: str, payload: dict[str, Any], *, key: str, delay: float = 0.0) -> None:
    """Hand a job to the fleet, or run it here in the embedded mode; with `delay`, it
    runs that many seconds later (on the fleet a delay queue holds it, not a worker).

    A failed publish is logged, not raised: the state it follows is committed,
    and the workers' sweep finds the job's work undone.
    """
    if not settings.RABBITMQ_URL:
        _spawn(_run_here(kind, payload, delay))
        return
    try:
        await publisher().publish(kind, payload, key=key, delay=delay)
    except Exception:
        log.exception("could not publish %s %s; the workers' sweep will redo it", kind, key)


async def _run_here(kind: str, payload: dict[str, Any], delay: float = 0.0) -> None:
    try:
        if delay > 0:
            await asyncio.sleep(delay)
        await HANDLERS[kind](payload)
    except Exception:
        log.exception("job %s failed in process", kind)


# --- what follows a write ---------------------------------------------------------


async def settle(*, within: float) -> None:
    """Wait (bounded) for the job tasks still running: before a replica exits."""
    if _local:
        await asyncio.wait(list(_local), timeout=within)


def follow_up(applied: Applied, presence: Presence) -> None:
    """`after_write` without holding up the socket that made the write: a job's publish
    waits for the broker's confirm of a persistent message (a disk write), and the
    player's next message should not wait behind it."""
    if applied.finished_key is not None or applied.bot_due:
        _spawn(after_write(applied, presence))


async def after_write(applied: Applied, presence: Presence) -> None:
    """Jobs a landed write calls for: count a finished game, let the computer move."""
    key = applied.finished_key
    if key is not None:
        await dispatch(GAME_FINISHED, {"key": key}, key=key)
    if applied.bot_due:
        row = applied.row
        payload = {
            "room": row.code,
            "version": row.version,
            "row": list(row.public()),
            "seats": list(row.seats()),
            "presence": list(presence.public()),
        }
        await dispatch(
            BOT_MOVE, payload, key=f"{row.code}:{row.version}", delay=settings.BOT_THINK_SECONDS
        )


# --- handlers ----------------------------------------------------------------------


async def game_finished(payload: dict[str, Any]) -> None:
    await play.count_result(key=str(payload["key"]))


async def bot_move(payload: dict[str, Any]) -> None:
    """The computer moves for the turn at `version`, at most once (compare-and-swap).

    The job carries the room as it was when the computer's turn came (and its
    presence), so the move is one statement; a job from the sweep carries
    neither and reads the room first.
    """
    room, version = str(payload["room"]), payload["version"]
    if not isinstance(version, int):
        raise ValueError("version must be an integer")
    known = RoomRow.from_public(payload["row"], payload.get("seats")) if "row" in payload else None
    # The think time (BOT_THINK_SECONDS) is the job's delay (after_write): no sleep here.
    applied = await play.bot_move(code=room, version=version, known=known)
    if applied is None:
        return
    if "presence" in payload:
        presence = Presence.from_public(payload["presence"])
    else:  # a job from the sweep: count presence now
        found = await play.view(room)
        presence = found[1] if found is not None else Presence()
    await signals.announce(signals.room_changed, row=applied.row, presence=presence)
    await after_write(applied, presence)


async def match_pair(payload: dict[str, Any]) -> None:
    """Pair whoever waits, then tell every paired player where to go.

    The seat token in `matched` is derived from SECRET_KEY when the ticket is claimed
    (matchmaking.seat_token), not read from the database: a ticket whose send failed is
    claimed again by the next pass (a retry, the sweep) and told the same token.
    """
    await call(matchmaking.match_pair)
    pairings = await call(matchmaking.match_claim)
    if not pairings:
        return
    sent: list[int] = []
    try:
        for pairing in pairings:
            await signals.announce(signals.matched, pairing=pairing)
            sent.append(pairing.ticket)
    finally:
        unsent = [p.ticket for p in pairings if p.ticket not in sent]
        if unsent:
            await call(matchmaking.match_unclaim, tickets=unsent)


HANDLERS = {GAME_FINISHED: game_finished, BOT_MOVE: bot_move, MATCH_PAIR: match_pair}


async def sweep() -> None:
    """Redo work whose job never arrived, free what nobody uses; run periodically by every
    worker (by the replica's heartbeat in the embedded mode)."""
    for key in await call(results.results_uncounted, older_than_seconds=5.0):
        await game_finished({"key": key})
    late = settings.BOT_THINK_SECONDS + 5.0
    for room, version in await call(services.rooms_awaiting_bot, older_than_seconds=late):
        await bot_move({"room": room, "version": version})
    await match_pair({})
    await release_away_seats()
    await call(lifecycle.rooms_remove_empty, older_than_seconds=settings.EMPTY_ROOM_SECONDS)


async def release_away_seats() -> None:
    """Release every seat whose holder has been away too long, as `leave` would: the room
    is told (`left`, reason offline), a forfeited game counted. Several workers may find
    the same seat; the compare-and-swap lets one of them release it."""
    away = await call(
        lifecycle.seats_away, older_than_seconds=settings.SEAT_OFFLINE_RELEASE_SECONDS
    )
    for room, mark, holder in away:
        applied = await play.release(code=room, mark=mark, holder=holder)
        if applied is None:
            continue
        found = await play.view(room)
        presence = found[1] if found is not None else Presence()
        await signals.announce(
            signals.seat_left, applied=applied, presence=presence, reason="offline"
        )
        await after_write(applied, presence)
