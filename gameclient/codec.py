"""The wire as docs/protocol.md defines it (JSON Schemas: docs/asyncapi.yaml), standard
library only, so that every client here, Locust's gevent one included, speaks it one way."""

from __future__ import annotations

import json
import math
from typing import Any, Literal, NotRequired, TypedDict

PROTOCOL = 1

Mark = Literal["X", "O"]
Status = Literal["waiting", "playing", "won", "draw"]
Frame = dict[str, Any]  # any decoded server frame; narrow it with `kind()`

# Close codes (docs/protocol.md, "Close codes").
CLOSE_NORMAL = 1000
CLOSE_ABNORMAL = 1006  # no close frame: the TCP stream ended; never sent by a server
CLOSE_FLOODING = 1008
CLOSE_TOO_BIG = 1009
CLOSE_SERVER_ERROR = 1011
CLOSE_DRAINING = 1012

FINISHED: tuple[Status, ...] = ("won", "draw")
# Move refusals that mean "your view is behind": ask for the state (`sync`) and go on.
RESYNC_ERRORS = ("stale_version", "not_your_turn", "cell_taken", "game_over", "not_started")


class Seat(TypedDict):
    name: str
    online: bool
    bot: NotRequired[bool]


class Players(TypedDict):
    X: Seat | None
    O: Seat | None  # noqa: E741 (the mark's name)


class State(TypedDict):
    type: Literal["state"]
    room: str
    version: int
    board: list[Mark | None]
    turn: Mark | None
    status: Status
    winner: Mark | None
    line: list[int] | None
    players: Players
    spectators: int
    rematch: list[Mark]
    presence_at: NotRequired[int]  # (added) when presence was counted, ms


class Welcome(TypedDict):
    type: Literal["welcome"]
    room: str
    server: str
    protocol: int


class Joined(TypedDict):
    type: Literal["joined"]
    mark: Mark
    token: str


class Error(TypedDict):
    type: Literal["error"]
    code: str
    message: str


class Matched(TypedDict):
    type: Literal["matched"]
    room: str
    mark: Mark
    token: str
    opponent: str


class ProtocolError(ValueError):
    """A frame that is not one JSON object (docs/protocol.md, "Transport")."""


def _no_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: valid JSON syntax, no number anyone can send back
        raise ProtocolError(f"{text} is out of range")
    return value


def decode(data: str | bytes) -> Frame:
    """One frame as strict RFC 8259 JSON (no NaN, Infinity or numbers beyond a double),
    which must be an object."""
    try:
        frame = json.loads(data, parse_constant=_no_constant, parse_float=_finite)
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, ProtocolError
        raise ProtocolError(f"not JSON ({error}): {data[:200]!r}") from None
    if not isinstance(frame, dict):
        raise ProtocolError(f"not a JSON object: {data[:200]!r}")
    return frame


def encode(message: dict[str, Any]) -> str:
    """A client message as one compact JSON text frame (no NaN or Infinity: not JSON)."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def kind(frame: Frame) -> str | None:
    """The frame's `type`; None for the tutorial relay's `{"payload": ...}`."""
    value = frame.get("type")
    return value if isinstance(value, str) else None


def newer(state: Frame, than: Frame | None) -> bool:
    """Whether `state` replaces the kept one: the highest version wins, the later on a tie
    (broadcasts from different replicas can arrive out of order)."""
    return than is None or state["version"] >= than["version"]


PRESENCE_KEYS = ("spectators", "presence_at")


def merged(state: Frame, kept: Frame | None) -> Frame:
    """The state to keep once `state` arrives: the game (board, seats, turn) of the higher
    version (the later on a tie), presence (who is online, spectators) of the later
    `presence_at`. Presence changes without a version change, so two replicas' counts
    can arrive in either order; `presence_at` orders them."""
    if kept is None:
        return state
    game, other = (state, kept) if newer(state, kept) else (kept, state)
    if other.get("presence_at", 0) <= game.get("presence_at", 0):
        return game
    result = dict(game)
    for key in PRESENCE_KEYS:
        result[key] = other[key]
    players = {}
    for mark, seat in game["players"].items():
        before = other["players"].get(mark)
        if seat and before and before["name"] == seat["name"] and not seat.get("bot"):
            seat = {**seat, "online": before["online"]}
        players[mark] = seat
    result["players"] = players
    return result


# --- client -> server (docs/protocol.md, "Client -> server") ----------------------------


def join(name: str, token: str | None = None) -> dict[str, Any]:
    """Take the first empty seat, or with `token` reclaim the seat it was issued for."""
    message: dict[str, Any] = {"type": "join", "name": name}
    if token is not None:
        message["token"] = token
    return message


def move(cell: int, version: int | None = None) -> dict[str, Any]:
    """Place the mover's mark; with `version`, only on that version of the room."""
    message: dict[str, Any] = {"type": "move", "cell": cell}
    if version is not None:
        message["version"] = version
    return message


def chat(text: str) -> dict[str, Any]:
    return {"type": "chat", "text": text}


def rematch() -> dict[str, Any]:
    return {"type": "rematch"}


def bot(level: str | None = None) -> dict[str, Any]:
    """The computer in the empty seat (`level`: `perfect`, the default, or `easy`)."""
    return {"type": "bot"} if level is None else {"type": "bot", "level": level}


def quickmatch(name: str) -> dict[str, Any]:
    return {"type": "quickmatch", "name": name}


def leave() -> dict[str, Any]:
    """Give up the seat (a running game is forfeited); the socket stays as a spectator."""
    return {"type": "leave"}


def sync() -> dict[str, Any]:
    return {"type": "sync"}


def ping(t: object) -> dict[str, Any]:
    return {"type": "ping", "t": t}


def relay(data: object) -> dict[str, Any]:
    """The seed tutorial's relay: every member gets `{"payload": data}`."""
    return {"data": data}
