"""The two kinds of room member: one who watches, one who plays a scripted game."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from . import codec
from .codec import FINISHED, Frame
from .member import Link, Member, Misbehaved


class Spectator(Member):
    """Watches a room: keeps every state it sees, reconnects after any close."""

    role = "spectator"


class Player(Member):
    """Takes a seat and plays `cells` (in order, skipping cells already taken) for its mark.

    `think` is the (min, max) pause before each move. Once the game is won or drawn
    the player is finished: it closes its socket unless `linger` (then it stays
    until `stop()`, so presence does not change under a test's final checks).
    """

    role = "player"

    def __init__(
        self,
        base_url: str,
        room: str,
        name: str,
        cells: Sequence[int],
        *,
        think: tuple[float, float] = (0.0, 0.0),
        linger: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(base_url, room, label=kwargs.pop("label", f"{name}@{room}"), **kwargs)
        self.name = name
        self.cells = list(cells)
        self.think = think
        self.linger = linger
        self.mark: str | None = None
        self.token: str | None = None
        self.seated = False  # the current connection holds the seat
        self.joined_at: list[float] = []  # every `joined`
        # (version, cell, server, monotonic time) of every move sent
        self.moves_sent: list[tuple[int, int, str | None, float]] = []
        self._move_for: int | None = None  # the version a move is pending or sent for
        self._mover: asyncio.Task[None] | None = None

    @property
    def finished(self) -> bool:
        return self.latest is not None and self.latest["status"] in FINISHED

    @property
    def my_cells(self) -> list[int]:
        """Cells holding this player's mark in the kept state."""
        if self.latest is None or self.mark is None:
            return []
        return [i for i, mark in enumerate(self.latest["board"]) if mark == self.mark]

    def rejoin_delays(self) -> list[float]:
        """Seconds from each lost connection to the seat being held again."""
        delays = []
        for link in self.links:
            if link.closed_at is None or link.close_code == 1000 or link.server is None:
                continue
            later = [t for t in self.joined_at if t > link.closed_at]
            if later:
                delays.append(later[0] - link.closed_at)
        return delays

    async def wait_finished(self, within: float) -> Frame:
        state: Frame = await self.wait_for(
            lambda: self.latest if self.finished else None, "finished game", within
        )
        return state

    async def _opened(self, ws: ClientConnection) -> None:
        self.seated = False
        self._move_for = None
        if self.finished:
            return
        await ws.send(codec.encode(codec.join(self.name, self.token)))

    def _closed(self) -> None:
        self.seated = False
        if self._mover is not None:
            self._mover.cancel()
            self._mover = None

    async def _handle(self, ws: ClientConnection, message: Frame, link: Link) -> None:
        await super()._handle(ws, message, link)
        kind = message.get("type")
        if kind == "joined":
            if self.mark is not None and message["mark"] != self.mark:
                raise Misbehaved(f"{self.label}: rejoined as {message['mark']}, not {self.mark}")
            self.mark, self.token = message["mark"], message["token"]
            self.seated = True
            self.joined_at.append(time.monotonic())
        elif kind == "error":
            if message["code"] in ("bad_token", "room_full", "already_joined", "not_joined"):
                raise Misbehaved(f"{self.label}: {message}")
            # Whatever the refusal, our view may be behind: ask for the state.
            self._move_for = None
            await ws.send(codec.encode(codec.sync()))
        self._consider(ws, link)

    def _my_turn(self) -> Frame | None:
        state = self.latest
        if (
            self.seated
            and self.mark is not None
            and state is not None
            and state["status"] == "playing"
            and state["turn"] == self.mark
        ):
            return state
        return None

    def _consider(self, ws: ClientConnection, link: Link) -> None:
        state = self._my_turn()
        if state is None or self._move_for == state["version"]:
            return
        if self._mover is not None and not self._mover.done():
            return
        self._move_for = state["version"]
        self._mover = asyncio.create_task(self._move(ws, state["version"], link))

    async def _move(self, ws: ClientConnection, version: int, link: Link) -> None:
        sent = False
        try:
            await asyncio.sleep(self.rng.uniform(*self.think))
            state = self._my_turn()
            if state is None or state["version"] != version or self.ws is not ws:
                return
            free = [cell for cell in self.cells if state["board"][cell] is None]
            if not free:
                raise Misbehaved(f"{self.label}: script exhausted on {state['board']}")
            self.moves_sent.append((version, free[0], link.server, time.monotonic()))
            sent = True
            with contextlib.suppress(ConnectionClosed):
                await ws.send(codec.encode(codec.move(free[0], version)))
        except Exception as exc:  # the caller sees it in `failure` (and in wait_until)
            self.failure = exc
            raise
        finally:
            self._mover = None
            if not sent:
                self._move_for = None
        if not sent and self.ws is ws:
            self._consider(ws, link)  # the state moved on while we thought
