"""The GameRoom consumer: parse a frame, call a service, broadcast. No rules, no SQL."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from config import logs
from game import jobs, matchmaking, play
from game.aio import call
from game.exceptions import GameError
from game.rooms import Applied, token_hash
from game.rules import Mark
from game.selectors import state_of

from . import drain, groups, limits, metrics
from .dispatch import LeanDispatchMixin
from .groups import broadcast_row, broadcast_text, local_rooms, presence_changed, room_group
from .protocol import (
    PROTOCOL_VERSION,
    Bot,
    Chat,
    ClientMessage,
    Join,
    Move,
    Ping,
    QuickMatch,
    Relay,
    Simple,
    encode,
    error_frame,
    parse,
)
from .ratelimit import RateLimiter, Verdict
from .replica import replica_id, replica_name

log = logging.getLogger(__name__)

CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_SERVER_ERROR = 1011
CLOSE_TRY_LATER = 1013  # a fleet limit (realtime/limits.py): the reason names which


class GameRoom(LeanDispatchMixin, AsyncWebsocketConsumer):  # type: ignore[misc]
    room: str
    group: str
    mark: Mark | None = None
    seat_hash: str | None = None  # the hash of the token this socket holds `mark` by
    name: str = ""
    quickmatch_timer: asyncio.Task[None] | None = None
    registered = False
    closed = False
    address: str | None = None  # counted in limits.addresses while set

    async def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room_code"]
        logs.bind(room=self.room, connection=self.channel_name)  # this socket's log records
        self.group = room_group(self.room)
        self.limiter = RateLimiter(
            soft=settings.RATE_LIMIT_PER_SECOND, hard=settings.RATE_LIMIT_CLOSE_PER_SECOND
        )
        self.busy = asyncio.Lock()
        if drain.is_draining():
            # The balancer has not noticed yet: tell the client to go elsewhere.
            await self.accept()
            await self.close_with(drain.CLOSE_DRAINING)
            return
        address = limits.client_address(self.scope)
        refusal = limits.addresses.admit(address)
        if refusal is not None:
            await self.refuse(refusal)
            return
        self.address = address
        # One statement (PostgreSQL) or one thread hop: register the socket, read the room.
        row, presence, created = await play.open_connection(
            code=self.room, channel_name=self.channel_name, replica=replica_id()
        )
        if presence.x + presence.o + presence.spectators > settings.MAX_ROOM_MEMBERS:
            await play.close_connection(channel_name=self.channel_name)
            await self.refuse("room_members")
            return
        self.registered = True
        drain.register(self)
        metrics.CONNECTIONS.inc()
        local_rooms[self.room] += 1
        metrics.ROOMS.set(len(local_rooms))
        groups.remember(row, presence)
        # Join the group before accepting: `welcome` promises broadcasts already flow.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send(
            text_data=encode(
                {
                    "type": "welcome",
                    "room": self.room,
                    "server": replica_name(),
                    "protocol": PROTOCOL_VERSION,
                }
            )
        )
        # Read before group_add, so a broadcast may overtake it: clients keep the highest version.
        await self.send(text_data=encode(state_of(row, presence)))
        if not created:
            # The spectator count grew: tell the others. A socket that created the room
            # is its first member; anyone who connected meanwhile saw it (their insert
            # of the room waited for ours) and broadcasts their own count.
            presence_changed(self.room, connect=True)

    async def refuse(self, reason: str) -> None:
        """A fleet limit says no: accepted, then closed with 1013 and the reason."""
        metrics.REFUSED.labels(reason).inc()
        await self.accept()
        if not self.closed:
            self.closed = True
            metrics.CLOSES.labels(str(CLOSE_TRY_LATER)).inc()
            await self.close(code=CLOSE_TRY_LATER, reason=reason)

    async def disconnect(self, code: int) -> None:
        self.closed = True
        if self.quickmatch_timer is not None:
            self.quickmatch_timer.cancel()
        limits.addresses.release(self.address)
        self.address = None
        if not self.registered:
            return
        self.registered = False
        drain.unregister(self)
        metrics.CONNECTIONS.dec()
        local_rooms[self.room] -= 1
        if local_rooms[self.room] <= 0:
            del local_rooms[self.room]
            groups.known.pop(self.room, None)
            limits.budgets.forget(self.room)
        metrics.ROOMS.set(len(local_rooms))
        await self.channel_layer.group_discard(self.group, self.channel_name)
        if await play.close_connection(channel_name=self.channel_name):
            presence_changed(self.room)

    # --- frames from the client ----------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closed:  # read before our close went out: the client will not see an answer
            return
        verdict = self.limiter.hit()
        if verdict is Verdict.CLOSE:
            limits.addresses.cool_down(self.address)
            await self.close_with(CLOSE_POLICY)
            return
        if self.oversize(text_data):
            await self.close_with(CLOSE_TOO_BIG)
            return
        async with self.busy:  # a drain waits for the message in hand
            try:
                if verdict is Verdict.DROP:
                    raise GameError("rate_limited")
                if text_data is None:
                    raise GameError("bad_message", "Frames must be text.")
                message = parse(text_data)
                metrics.count_in(message)
                await self.handle(message)
            except GameError as error:
                metrics.ERRORS.labels(error.code).inc()
                if error.code == "not_joined":  # our seat was given up (another tab, a release)
                    self.mark = self.seat_hash = None
                await self.send(text_data=error_frame(error))
            except Exception:
                log.exception("room %s: message failed", self.room)
                await self.close_with(CLOSE_SERVER_ERROR)

    def spend_fan_out(self) -> None:
        """A relay or chat frame costs one delivery per member; the room's budget says
        whether it goes out (`room_busy` otherwise: dropped, the sender told)."""
        presence = groups.known_presence(self.room)
        members = max(1, presence.x + presence.o + presence.spectators)
        if not limits.budgets.spend(self.room, members):
            raise GameError("room_busy")

    async def close_with(self, code: int) -> None:
        if not self.closed:
            self.closed = True
            metrics.CLOSES.labels(str(code)).inc()
            try:
                await self.close(code=code)
            except OSError:  # the client went first: nobody to tell
                metrics.CLIENT_GONE.inc()

    async def send(
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None:
        """A frame to the client. A client that went away while we answered (ASGI servers
        raise an OSError for a send on a closed connection) is an ordinary disconnect,
        not our error: its `websocket.disconnect` follows and cleans up."""
        try:
            await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
        except OSError:
            if not self.closed:
                self.closed = True
                metrics.CLIENT_GONE.inc()

    async def drain_close(self) -> None:
        """Close with 1012 once the message being handled (if any) is done."""
        async with self.busy:
            await self.close_with(drain.CLOSE_DRAINING)

    @staticmethod
    def oversize(text: str | None) -> bool:
        """Over MAX_FRAME_BYTES of UTF-8 (the server closes bigger frames itself too)."""
        limit: int = settings.MAX_FRAME_BYTES
        return (
            text is not None
            and len(text) * 4 > limit
            and len(text.encode("utf-8", "surrogatepass")) > limit
        )

    async def handle(self, message: ClientMessage) -> None:
        match message:
            case Move(cell=cell, version=version):
                known = groups.known_row(self.room)
                await self.publish(
                    await play.move(
                        code=self.room,
                        mark=self.mark,
                        holder=self.seat_hash,
                        cell=cell,
                        version=version,
                        known=known,
                    )
                )
            case Relay(data=data):
                self.spend_fan_out()
                await broadcast_text(self.room, "game.relay", encode({"payload": data}))
            case Join(name=name, token=token):
                applied = await play.join(
                    code=self.room,
                    channel_name=self.channel_name,
                    held=self.mark,
                    name=name,
                    token=token,
                )
                mark = applied.write.seat
                assert mark is not None
                self.mark, self.name = mark, applied.row.seat(mark).name
                self.seat_hash = token_hash(applied.write.token)
                await self.send(
                    text_data=encode({"type": "joined", "mark": mark, "token": applied.write.token})
                )
                # This socket now counts for its seat, no longer as a spectator.
                presence = groups.known_presence(self.room).seated(mark)
                await broadcast_row(applied.row, presence)
                jobs.follow_up(applied, presence)
                presence_changed(self.room)  # a fresh count follows (other replicas' sockets)
            case Chat(text=text):
                if self.mark is None:
                    raise GameError("not_joined")
                self.spend_fan_out()
                chat = {"type": "chat", "mark": self.mark, "name": self.name, "text": text}
                await broadcast_text(self.room, "game.chat", encode(chat))
            case Simple(type="rematch"):
                known = groups.known_row(self.room)
                await self.publish(
                    await play.rematch(
                        code=self.room, mark=self.mark, holder=self.seat_hash, known=known
                    )
                )
            case Simple(type="leave"):
                known = groups.known_row(self.room)
                applied = await play.leave(
                    code=self.room, mark=self.mark, holder=self.seat_hash, known=known
                )
                self.mark = self.seat_hash = None
                # This socket (and any other holding the seat) now watches: a fresh count.
                await groups.broadcast_left(
                    applied, groups.known_presence(self.room), reason="leave"
                )
                jobs.follow_up(applied, groups.known_presence(self.room))
                presence_changed(self.room)
            case Bot(level=level):
                known = groups.known_row(self.room)
                await self.publish(
                    await play.invite_bot(
                        code=self.room,
                        held=self.mark,
                        holder=self.seat_hash,
                        level=level,
                        known=known,
                    )
                )
            case Simple(type="sync"):
                found = await play.view(self.room)
                if found is not None:
                    await self.send(text_data=encode(state_of(*groups.remember(*found))))
            case Ping(t=t):
                await self.send(text_data=encode({"type": "pong", "t": t}))
            case QuickMatch(name=name):
                ticket = await call(
                    matchmaking.match_request, name=name, channel_name=self.channel_name
                )
                await self.send(text_data=encode({"type": "matching", "ticket": ticket}))
                await jobs.dispatch(jobs.MATCH_PAIR, {}, key=f"match:{ticket}")
                if self.quickmatch_timer is None or self.quickmatch_timer.done():
                    self.quickmatch_timer = asyncio.create_task(self.quickmatch_give_up(ticket))

    async def quickmatch_give_up(self, ticket: int) -> None:
        """Nobody came within QUICKMATCH_TIMEOUT_SECONDS: leave the line and say so (the
        page offers the computer). A ticket paired meanwhile stays: `matched` follows."""
        await asyncio.sleep(settings.QUICKMATCH_TIMEOUT_SECONDS)
        if await call(matchmaking.match_cancel, channel_name=self.channel_name):
            async with self.busy:
                await self.forward(
                    encode({"type": "unmatched", "ticket": ticket, "reason": "timeout"})
                )

    async def publish(self, applied: Applied) -> None:
        """Send the room the state a write left, then the jobs that follow from it."""
        if not applied.changed:
            return
        await broadcast_row(applied.row)
        jobs.follow_up(applied, groups.known_presence(self.room))

    # --- group events: pre-encoded frames, forwarded as they are --------------

    async def forward(self, text: str) -> None:
        """A frame from the room; none after our close went out (a drain's 1012)."""
        if not self.closed:
            await self.send(text_data=text)

    async def game_state(self, event: dict[str, Any]) -> None:
        metrics.OUT_STATE.inc()
        await self.forward(groups.state_text(event))

    async def game_chat(self, event: dict[str, Any]) -> None:
        metrics.OUT_CHAT.inc()
        await self.forward(event["text"])

    async def game_relay(self, event: dict[str, Any]) -> None:
        metrics.OUT_RELAY.inc()
        await self.forward(event["text"])

    async def game_left(self, event: dict[str, Any]) -> None:
        """Someone gave up a seat: if it is ours (the same seat token), we now watch."""
        if self.mark == event["mark"] and self.seat_hash == event["holder"]:
            self.mark = self.seat_hash = None
        await self.forward(event["text"])

    async def game_direct(self, event: dict[str, Any]) -> None:
        """A frame for this connection only (quick match's `matched`)."""
        await self.forward(event["text"])


class Refuse(AsyncWebsocketConsumer):  # type: ignore[misc]
    """Any other WebSocket path: refused during the handshake (HTTP 403)."""

    async def connect(self) -> None:
        await self.close()
