"""One time budget for every wait and wall-clock limit in the tests.

Every wait ("the frame arrives within a second", "the workers count 200 games within
90 s") and every wall-clock threshold is written as `budget(seconds)`: the seconds it
takes on an idle developer machine, times `TEST_TIME_SCALE` from the environment
(default 1). CI on a slow or shared machine sets `TEST_TIME_SCALE=2` or `3`, and
every budget grows with it; nothing else changes. A limit that is itself the promise
under test (docs/protocol.md: a closed seat shows offline within one second) is
scaled the same way, and says which promise it checks where it is used.

Server-side timings (the presence delays, the drain window, a worker's retry delays)
are settings of the system under test, not budgets: they are never scaled.
"""

from __future__ import annotations

import math
import os


def _scale_from_environment() -> float:
    raw = os.environ.get("TEST_TIME_SCALE", "").strip() or "1"
    try:
        scale = float(raw)
    except ValueError:
        raise RuntimeError(f"TEST_TIME_SCALE must be a number (1, 2, 2.5), not {raw!r}") from None
    # Below 1 every wait would be shorter than the promise it checks: a limit like
    # "offline within one second" would turn into a stricter one nobody promised.
    if not math.isfinite(scale) or scale < 1:
        raise RuntimeError(f"TEST_TIME_SCALE must be 1 or more, not {raw!r}")
    return scale


TEST_TIME_SCALE: float = _scale_from_environment()


def budget(seconds: float) -> float:
    """`seconds` of waiting on an idle machine, scaled by TEST_TIME_SCALE."""
    return seconds * TEST_TIME_SCALE
