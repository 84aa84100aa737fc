"""Live progress of a local Locust run: a line every few seconds while it runs.

Locust runs headless with `only-summary` (its own periodic tables would bury the run's
output), so `make loadtest` used to print nothing for a minute. This reads what the
master's `--csv` files say (it rewrites them every second and flushes every 5 s) and
prints one line:

    progress   25s  users 40  moves/s 131.2  move p99 48 ms (so far)  lost 0  failures 0

- users: the master's user count (`<csv>_stats_history.csv`, the Aggregated row);
- moves/s: `ws move->opponent` requests since the previous line, per second;
- move p99: that request's 99th percentile over the run so far (`<csv>_stats.csv`);
- lost: lost deliveries so far (`<csv>_failures.csv`, errors that are `LostDelivery`),
  failures: every failure so far.

Standard library only (it runs in the load-test virtualenv's runner). The files may be
half-written when read: a line that does not parse is skipped, a missing file shows as
"-" until it appears. The final table and the thresholds are loadtest/local_report.py's.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

from .metrics import MOVE_TO_OPPONENT, is_loss


def _rows(path: Path) -> list[dict[str, str]]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    lines = text.splitlines()
    if text and not text.endswith("\n"):
        lines = lines[:-1]  # a line still being written
    try:
        return list(csv.DictReader(lines))
    except csv.Error:
        return []


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class Progress:
    """`line()` reads the CSVs under `base` (Locust's `--csv` prefix) and formats one line;
    `maybe_print()` prints it every `every` seconds once the swarm started."""

    def __init__(self, base: Path, *, every: float = 5.0) -> None:
        self.base = base
        self.every = every
        self._last_at: float | None = None
        self._last_moves: float | None = None
        self._started: float | None = None

    def snapshot(self) -> dict[str, float | None]:
        users = None
        for row in reversed(_rows(Path(f"{self.base}_stats_history.csv"))):
            if row.get("Name") == "Aggregated":
                users = _number(row.get("User Count"))
                break
        moves = p99 = None
        for row in _rows(Path(f"{self.base}_stats.csv")):
            if row.get("Name") == MOVE_TO_OPPONENT:
                moves = _number(row.get("Request Count"))
                p99 = _number(row.get("99%"))
        lost = failures = None
        failure_rows = _rows(Path(f"{self.base}_failures.csv"))
        if failure_rows or Path(f"{self.base}_failures.csv").exists():
            lost = failures = 0.0
            for row in failure_rows:
                occurrences = _number(row.get("Occurrences")) or 0.0
                failures += occurrences
                if is_loss(str(row.get("Error", ""))):
                    lost += occurrences
        return {"users": users, "moves": moves, "p99": p99, "lost": lost, "failures": failures}

    def line(self, now: float) -> str:
        if self._started is None:
            self._started = now
        found = self.snapshot()
        rate = "-"
        moves = found["moves"]
        if moves is not None and self._last_moves is not None and self._last_at is not None:
            elapsed = now - self._last_at
            if elapsed > 0:
                rate = f"{max(0.0, moves - self._last_moves) / elapsed:.1f}"
        if moves is not None:
            self._last_moves, self._last_at = moves, now
        elif self._last_at is None:
            self._last_at = now

        def show(value: float | None, unit: str = "") -> str:
            return "-" if value is None else f"{value:.0f}{unit}"

        return (
            f"progress {now - self._started:>4.0f}s  users {show(found['users'])}"
            f"  moves/s {rate}  move p99 {show(found['p99'], ' ms')} (so far)"
            f"  lost {show(found['lost'])}  failures {show(found['failures'])}"
        )

    def maybe_print(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._last_printed is not None and now - self._last_printed < self.every:
            return
        self._last_printed = now
        print(self.line(now), flush=True)

    _last_printed: float | None = None
