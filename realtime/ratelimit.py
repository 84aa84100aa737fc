"""Per-connection flood control: a sliding one-second window.

Every socket has one, most never send: the window's timestamps live in an `array('d')`
created on the first message and holding only the messages of the last `window` seconds
(at most `hard + 1`), 8 bytes each. An idle socket pays for the slotted object alone
(~60 bytes), a socket sending a few messages a second ~100 bytes; the `deque(maxlen=hard
+ 1)` this replaces cost 760 bytes per socket from the start (tracemalloc).
"""

from __future__ import annotations

import time
from array import array
from enum import Enum


class Verdict(Enum):
    OK = "ok"
    DROP = "drop"  # over the soft limit: answer rate_limited, ignore the message
    CLOSE = "close"  # over the hard limit: close with 1008


class RateLimiter:
    __slots__ = ("_stamps", "hard", "soft", "window")

    def __init__(self, *, soft: int, hard: int, window: float = 1.0) -> None:
        self.soft = soft
        self.hard = hard
        self.window = window
        self._stamps: array[float] | None = None  # oldest first; created by the first hit

    def hit(self, now: float | None = None) -> Verdict:
        now = time.monotonic() if now is None else now
        stamps = self._stamps
        if stamps is None:
            stamps = self._stamps = array("d")
        stamps.append(now)
        if len(stamps) > self.hard + 1:
            del stamps[0]  # the window never needs more than hard + 1 to decide
        horizon = now - self.window
        if stamps[0] <= horizon:
            expired = 1
            while stamps[expired] <= horizon:
                expired += 1
            del stamps[:expired]
        count = len(stamps)
        if count > self.hard:
            return Verdict.CLOSE
        if count > self.soft:
            return Verdict.DROP
        return Verdict.OK
