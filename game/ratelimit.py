"""Per-connection flood control: a sliding one-second window."""

from __future__ import annotations

import time
from collections import deque
from enum import Enum


class Verdict(Enum):
    OK = "ok"
    DROP = "drop"  # over the soft limit: answer rate_limited, ignore the message
    CLOSE = "close"  # over the hard limit: close with 1008


class RateLimiter:
    def __init__(self, *, soft: int, hard: int, window: float = 1.0) -> None:
        self.soft = soft
        self.hard = hard
        self.window = window
        self._stamps: deque[float] = deque(maxlen=hard + 1)

    def hit(self, now: float | None = None) -> Verdict:
        now = time.monotonic() if now is None else now
        stamps = self._stamps
        stamps.append(now)
        horizon = now - self.window
        while stamps[0] <= horizon:
            stamps.popleft()
        count = len(stamps)
        if count > self.hard:
            return Verdict.CLOSE
        if count > self.soft:
            return Verdict.DROP
        return Verdict.OK
