"""Wire messages of protocol version 1 (docs/protocol.md) and client frame parsing.

Parsing checks only what does not depend on the game (JSON shape, field
types); game-dependent checks and their order live in the services.
"""

from __future__ import annotations

import json
import math
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from game.exceptions import GameError
from game.rooms import BOT_NAME
from game.rules import Mark

PROTOCOL_VERSION = 1
NAME_MAX = 32
CHAT_MAX = 280


# --- server -> client ---------------------------------------------------------


class WelcomeMessage(TypedDict):
    type: Literal["welcome"]
    room: str
    server: str
    protocol: int


class JoinedMessage(TypedDict):
    type: Literal["joined"]
    mark: Mark
    token: str


class ChatMessage(TypedDict):
    type: Literal["chat"]
    mark: Mark
    name: str
    text: str


class ErrorMessage(TypedDict):
    type: Literal["error"]
    code: str
    message: str


def encode(message: object) -> str:
    """One compact JSON text frame (ASCII-escaped, so any string a client sent is valid UTF-8)."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


def error_frame(error: GameError) -> str:
    return encode(ErrorMessage(type="error", code=error.code, message=error.message))


# --- client -> server ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Join:
    name: str
    token: str | None


@dataclass(frozen=True, slots=True)
class Move:
    cell: object  # validated by the move service, in the protocol's error order
    version: int | None


@dataclass(frozen=True, slots=True)
class Chat:
    text: str


@dataclass(frozen=True, slots=True)
class Simple:
    """Messages without fields: rematch, sync, leave."""

    type: Literal["rematch", "sync", "leave"]


@dataclass(frozen=True, slots=True)
class Bot:
    level: Literal["perfect", "easy"]  # optional "level" field, an addition to protocol 1


@dataclass(frozen=True, slots=True)
class Ping:
    t: Any


@dataclass(frozen=True, slots=True)
class Relay:
    data: Any


@dataclass(frozen=True, slots=True)
class QuickMatch:
    """Addition to protocol 1: ask to be paired with the next waiting player."""

    name: str


ClientMessage = Join | Move | Chat | Simple | Bot | Ping | Relay | QuickMatch


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Letters that print as nothing (Hangul fillers, the blank Braille pattern): with white
# space, all a blank name or message is made of.
_INVISIBLE = dict.fromkeys(map(ord, "\u115f\u1160\u3164\uffa0\u2800"))
CHAT_LINE_BREAKS_MAX = 5


def _visible(text: str) -> bool:
    return bool(text.translate(_INVISIBLE).strip())


def _name(value: object) -> str:
    """1-32 printable characters (no control or format characters: no bidi overrides),
    not all blank."""
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= NAME_MAX
        or not value.isprintable()
        or not _visible(value)
    ):
        raise GameError("bad_message", "name must be 1-32 printable characters, not blank.")
    if _folded(value) == _folded(BOT_NAME):
        raise GameError("bad_message", f"{BOT_NAME} is the computer opponent's name.")
    return value


def _folded(name: str) -> str:
    """A name as it reads: compatibility forms, letters that print as nothing and case
    set aside (full-width "COMPUTER", " computer" and "Computer" read alike)."""
    return unicodedata.normalize("NFKC", name).translate(_INVISIBLE).strip().casefold()


def _chat(value: object) -> str:
    """1-280 characters, printable but for at most 5 line breaks, not all blank."""
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= CHAT_MAX
        or value.count("\n") > CHAT_LINE_BREAKS_MAX
        or not value.replace("\n", "").isprintable()
        or not _visible(value)
    ):
        raise GameError(
            "bad_message",
            "text must be 1-280 printable characters, not blank, at most 5 line breaks.",
        )
    return value


MAX_DEPTH = 64


def _too_deep(text: str) -> bool:
    """Nesting deeper than MAX_DEPTH: refused before the JSON parser recurses into it.

    Only frames holding many brackets are scanned, so ordinary frames pay two
    `str.count` calls.
    """
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


class _NotFinite(ValueError):
    """A number beyond a double (1e999): JSON syntax, but no value anyone can send back."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


def parse(text: str) -> ClientMessage:
    """Turn one text frame into a client message, or raise GameError."""
    if _too_deep(text):
        raise GameError("bad_json", f"JSON nested deeper than {MAX_DEPTH} levels.")
    try:
        obj = json.loads(text, parse_constant=_no_constants, parse_float=_finite)
    except _NotFinite:
        raise GameError("bad_message", "Numbers must fit a double (no 1e999).") from None
    except ValueError:
        raise GameError("bad_json") from None
    if not isinstance(obj, dict):
        raise GameError("bad_json")
    kind = obj.get("type")
    if kind is None:
        if "data" in obj:
            return Relay(obj["data"])
        raise GameError("unknown_type", "Messages need a type (or data, for the relay).")
    if not isinstance(kind, str):
        raise GameError("bad_message", "type must be a string.")
    if kind == "move":
        version = obj.get("version")
        if version is not None and not _is_int(version):
            raise GameError("bad_message", "version must be an integer.")
        return Move(cell=obj.get("cell"), version=version)
    if kind == "join":
        token = obj.get("token")
        if token is not None and not isinstance(token, str):
            raise GameError("bad_message", "token must be a string.")
        return Join(name=_name(obj.get("name")), token=token)
    if kind == "chat":
        return Chat(_chat(obj.get("text")))
    if kind == "rematch":
        return Simple("rematch")
    if kind == "sync":
        return Simple("sync")
    if kind == "leave":
        return Simple("leave")
    if kind == "bot":
        level = obj.get("level", "perfect")
        if level != "perfect" and level != "easy":
            raise GameError("bad_message", "level must be perfect or easy.")
        return Bot(level)
    if kind == "ping":
        return Ping(obj.get("t"))
    if kind == "quickmatch":
        return QuickMatch(_name(obj.get("name")))
    raise GameError("unknown_type", f"Unknown message type {kind[:40]!r}.")
