"""The fan-out client: rooms of members, the reader that counts and times every delivery,
and the paced actions (scripted moves and rematches, or relay frames).

It writes and scans frames by hand (no gameclient codec): it measures the server, so
its client must cost next to nothing. One action is in flight per room on the move
ladder; every member must get every `state` (or relay payload).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter

import websockets
from websockets.asyncio.client import ClientConnection


class Room:
    """One room's members and, for the game, its script: X 0,1,2 vs O 3,4, then rematch."""

    def __init__(self, code: str, members: list[ClientConnection]) -> None:
        self.code = code
        self.members = members
        self.version = 0  # highest version the players have seen
        self.status = "waiting"
        self.turn: str | None = None
        self.opener = "X"
        self.busy = False  # an action is in flight (its state not seen yet by the players)
        self.acted_at = -1  # the version the action in flight was sent at
        self.sent_at: dict[int, float] = {}  # version an action will produce -> send time
        self.by_mark: dict[str, ClientConnection] = {}  # who holds X and O (from `joined`)


class Meter:
    def __init__(self) -> None:
        self.mode = ""  # the ladder being climbed: only its deliveries count
        self.latencies: list[float] = []
        self.expected = 0
        self.errors = 0
        self.moves = 0  # move-path actions whose new state reached a player
        self.codes: Counter[str] = Counter()
        self.closed = 0  # member connections the server closed (never reset)

    def reset(self, mode: str) -> None:
        self.mode = mode
        self.latencies = []
        self.expected = 0
        self.errors = 0
        self.moves = 0
        self.codes = Counter()


async def reader(ws: ClientConnection, room: Room, meter: Meter, player: bool) -> None:
    """Read one member's frames until the server closes it (counted: its deliveries are lost)."""
    try:
        await _read(ws, room, meter, player)
    except websockets.ConnectionClosed:
        meter.closed += 1


async def _read(ws: ClientConnection, room: Room, meter: Meter, player: bool) -> None:
    """Count and time every delivery of the current ladder; keep parsing to a minimum.

    A game connection gets both kinds of frame: `state` counts while the move ladder
    runs, relay payloads while a relay ladder runs (a straggler of the other kind
    is not a delivery of this one).
    """
    last = -1
    members = len(room.members)
    async for frame in ws:
        now = time.perf_counter()
        text = frame if isinstance(frame, str) else frame.decode()
        if text.startswith('{"type":"state"'):
            state = json.loads(text)
            version = state["version"]
            moves = meter.mode == "moves"
            if version > last:
                last = version
                sent = room.sent_at.get(version)
                if moves and sent is not None:
                    meter.latencies.append(now - sent)
            if player and version >= room.version:
                if moves and version > room.version and version in room.sent_at:
                    meter.moves += 1
                room.version, room.status, room.turn = version, state["status"], state["turn"]
                # The action in flight landed once a newer version shows it (the other
                # player's copy of the version it was sent at does not count).
                if version > room.acted_at and (
                    state["status"] == "playing" or state["rematch"] == []
                ):
                    room.busy = False
            continue
        if text.startswith('{"type":'):
            if text.startswith('{"type":"joined"'):
                room.by_mark[json.loads(text)["mark"]] = ws
            elif text.startswith('{"type":"error"'):
                meter.errors += 1
                meter.codes[json.loads(text)["code"]] += 1
                if meter.mode == "moves" and room.busy:
                    # A refused action makes no state: not a lost delivery, but counted
                    # and shown as an error (the scripted client should never see one).
                    meter.expected -= members
                    room.busy = False
            continue
        if meter.mode == "moves":
            continue
        start = text.find('"m:')
        if start < 0:
            continue
        sent = float(text[start + 3 : text.find('"', start + 3)])
        meter.latencies.append(now - sent)


SCRIPT = {"X": [0, 1, 2], "O": [3, 4, 5]}


async def act(room: Room, meter: Meter, mode: str, members: int) -> bool:
    """One paced send for this room; False if the room could not act now."""
    now = time.perf_counter()
    if mode != "moves":
        key = "data" if mode == "data" else "message"
        await room.members[0].send(f'{{"{key}":"m:{now!r}"}}')
        meter.expected += members
        return True
    if room.busy or room.status == "waiting":
        return False
    room.busy = True
    room.acted_at = room.version
    if room.status in ("won", "draw"):
        room.sent_at[room.version + 1] = now
        await room.members[0].send('{"type":"rematch"}')
        await room.members[1].send('{"type":"rematch"}')
    else:
        assert room.turn is not None
        mover = room.by_mark[room.turn]
        cell = next_cell(room)
        room.sent_at[room.version + 1] = now
        await mover.send(f'{{"type":"move","cell":{cell},"version":{room.version}}}')
    meter.expected += members
    return True


def next_cell(room: Room) -> int:
    """Games follow the script, so the cell follows from the version within the game."""
    # versions: 2 seats, then 5 moves per game and 1 new game each: (v - 2) % 6 moves played
    played = (room.version - 2) % 6
    first, second = ("X", "O") if (room.version - 2) // 6 % 2 == 0 else ("O", "X")
    mover = first if played % 2 == 0 else second
    return SCRIPT["X" if mover == first else "O"][played // 2]


async def open_rooms(
    ports: list[int], rooms: int, members: int, seat: bool, meter: Meter
) -> tuple[list[Room], list[asyncio.Task[None]]]:
    """Open the rooms; with `seat`, members 0 and 1 take X and O and the games start."""
    all_rooms, readers = [], []
    for r in range(rooms):
        code = f"b{uuid.uuid4().hex[:10]}"
        conns = []
        for m in range(members):
            port = ports[(r + m) % len(ports)]
            conns.append(
                await websockets.connect(
                    f"ws://127.0.0.1:{port}/ws/game/{code}",
                    max_size=None,
                    compression=None,
                    proxy=None,
                    ping_interval=None,
                    close_timeout=2,
                )
            )
        room = Room(code, conns)
        all_rooms.append(room)
        for m, ws in enumerate(conns):
            readers.append(asyncio.create_task(reader(ws, room, meter, m < 2)))
    if seat:
        for room in all_rooms:
            await room.members[0].send('{"type":"join","name":"x"}')
            await room.members[1].send('{"type":"join","name":"o"}')
        deadline = time.monotonic() + 30
        while any(room.status != "playing" or len(room.by_mark) < 2 for room in all_rooms):
            if time.monotonic() > deadline:
                waiting = sum(
                    room.status != "playing" or len(room.by_mark) < 2 for room in all_rooms
                )
                raise RuntimeError(
                    f"{waiting} of {rooms} rooms never started ({meter.closed} sockets closed,"
                    f" errors {dict(meter.codes)}): see the replicas' logs"
                )
            await asyncio.sleep(0.05)
    return all_rooms, readers


QUIESCE_SECONDS = 30.0


async def quiesce(rooms: list[Room]) -> None:
    """Let in-flight actions land before the next ladder (an overloaded rung leaves a backlog)."""
    deadline = time.monotonic() + QUIESCE_SECONDS
    while busy := sum(room.busy for room in rooms):
        if time.monotonic() > deadline:
            print(f"  ({busy} rooms still wait for a state after {QUIESCE_SECONDS:g} s)")
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
