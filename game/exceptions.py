"""Every protocol error is a GameError; the consumer turns it into one `error` frame."""

from __future__ import annotations

from typing import Literal

ErrorCode = Literal[
    "bad_json",
    "unknown_type",
    "bad_message",
    "already_joined",
    "room_full",
    "bad_token",
    "not_joined",
    "not_started",
    "not_your_turn",
    "bad_cell",
    "cell_taken",
    "game_over",
    "stale_version",
    "not_over",
    "rate_limited",
    "room_busy",
]

DEFAULT_MESSAGES: dict[ErrorCode, str] = {
    "bad_json": "Frames must be one JSON object.",
    "unknown_type": "Unknown message type.",
    "bad_message": "Malformed message.",
    "already_joined": "You already hold a seat in this room.",
    "room_full": "Both seats are taken.",
    "bad_token": "That seat token is not valid for this room.",
    "not_joined": "Take a seat first.",
    "not_started": "The game starts when both seats are taken.",
    "not_your_turn": "It is not your turn.",
    "bad_cell": "cell must be an integer from 0 to 8.",
    "cell_taken": "That cell is already taken.",
    "game_over": "The game is over.",
    "stale_version": "The game has moved on; sync and try again.",
    "not_over": "The game is still being played.",
    "rate_limited": "Too many messages; slow down.",
    "room_busy": "This room is busy with messages; try again in a moment.",
}


class GameError(Exception):
    """A client-visible error: `code` is the protocol's, `message` is for humans."""

    def __init__(self, code: ErrorCode, message: str | None = None) -> None:
        self.code: ErrorCode = code
        self.message = message or DEFAULT_MESSAGES[code]
        super().__init__(f"{code}: {self.message}")
