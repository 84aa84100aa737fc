"""A replica's copy of the rooms it serves (realtime/groups.py): newest row, newest presence.

Row and presence age separately: a move carries the presence its replica knew, and a
presence count rides at whatever version was current. Whatever order the events
arrive in, the members of a replica are sent the newest row with the newest presence.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from game.rooms import Presence, RoomRow
from game.selectors import state_of
from realtime import groups
from realtime.protocol import encode

ROOM = "copy"


@pytest.fixture(autouse=True)
def _served_room() -> Iterator[None]:
    groups.local_rooms[ROOM] += 1
    yield
    del groups.local_rooms[ROOM]
    groups.known.pop(ROOM, None)


def event(row: RoomRow, presence: Presence) -> dict[str, Any]:
    """A `game.state` event as the layer delivers it."""
    return {
        "type": "game.state",
        "text": encode(state_of(row, presence)),
        "row": list(row.public()),
        "presence": list(presence.public()),
    }


def seen(text: str) -> tuple[int, bool, int]:
    state = json.loads(text)
    return state["version"], state["players"]["O"]["online"], state["spectators"]


SEATED = RoomRow(code=ROOM, version=2, x_name="ana", o_name="bo")
MOVED = RoomRow(code=ROOM, version=3, board="X........", x_name="ana", o_name="bo")
BO_ONLINE = Presence(x=1, o=1, spectators=2, asof=100.0)
BO_GONE = Presence(x=1, o=0, spectators=2, asof=101.0)


def test_a_move_with_old_presence_after_a_newer_count_is_forwarded_with_the_count() -> None:
    """bo's socket closed (count at v2, asof 101); a move made elsewhere before that
    replica heard of it arrives at v3 still saying bo is online."""
    assert seen(groups.state_text(event(SEATED, BO_GONE))) == (2, False, 2)
    assert seen(groups.state_text(event(MOVED, BO_ONLINE))) == (3, False, 2)
    assert groups.known[ROOM] == (MOVED, BO_GONE)


def test_a_newer_count_at_an_older_version_is_forwarded_at_the_newest_version() -> None:
    """The move (v3) came first; the close's count rides at v2, which clients would ignore."""
    assert seen(groups.state_text(event(MOVED, BO_ONLINE))) == (3, True, 2)
    assert seen(groups.state_text(event(SEATED, BO_GONE))) == (3, False, 2)


def test_an_event_that_is_newest_on_both_counts_is_forwarded_as_sent() -> None:
    groups.remember(SEATED, BO_ONLINE)
    fresh = event(MOVED, BO_GONE)
    assert groups.state_text(fresh) == fresh["text"]
    assert groups.known[ROOM] == (MOVED, BO_GONE)


def test_the_merged_frame_is_encoded_once_per_event() -> None:
    groups.remember(MOVED, BO_GONE)
    late = event(SEATED, BO_ONLINE)
    first = groups.state_text(late)
    assert late["local"] == first
    assert groups.state_text(late) is first


def test_rooms_without_members_here_are_not_kept() -> None:
    groups.remember(RoomRow(code="elsewhere", version=5), BO_ONLINE)
    assert "elsewhere" not in groups.known


async def test_a_close_brings_a_pending_connect_broadcast_forward() -> None:
    """A connect's presence broadcast may wait PRESENCE_CONNECT_DELAY_SECONDS; a close in
    the same room needs it within PRESENCE_BROADCAST_DELAY_SECONDS and gets it."""
    loop = asyncio.get_running_loop()
    try:
        before = loop.time()
        groups.presence_changed(ROOM, connect=True)
        task, due = groups._presence_pending[ROOM]
        assert due >= before + settings.PRESENCE_CONNECT_DELAY_SECONDS
        groups.presence_changed(ROOM, connect=True)  # rides along
        assert groups._presence_pending[ROOM][0] is task
        groups.presence_changed(ROOM)  # a close: sooner
        sooner, sooner_due = groups._presence_pending[ROOM]
        assert sooner is not task
        assert sooner_due <= loop.time() + settings.PRESENCE_BROADCAST_DELAY_SECONDS
        await asyncio.sleep(0)
        assert task.cancelled()
        groups.presence_changed(ROOM, connect=True)  # a connect never delays it
        assert groups._presence_pending[ROOM][0] is sooner
    finally:
        for pending in groups.presence_pending():
            pending.cancel()
        groups._presence_pending.clear()
