"""The run's verdict: counters summed over workers, the summary, thresholds, exit code.

Runs on the master (or a standalone Locust) when it quits. Request events are already
aggregated there by Locust; the per-process `ProcessCounters` arrive with every worker
report (`report_to_master`), the latest one per worker is kept and summed.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import CONFIG
from .metrics import (
    BACK_AFTER_1012,
    CONNECT_TO_STATE,
    DELIVERY_NAMES,
    FANOUT,
    JOIN,
    LATENCY_NAMES,
    MOVE_TO_OPPONENT,
    RELAY,
    REQUEST_TYPE,
    SCENARIO,
    ConnectFailed,
    JoinFailed,
    MoveFailed,
    ProcessCounters,
    is_loss,
    is_not_back,
)

log = logging.getLogger("loadtest")
COUNTER_KEY = "tictac_loadtest"
# Rows of the summary table, in this order, then any other WS names seen.
ORDER = (MOVE_TO_OPPONENT, FANOUT, RELAY, CONNECT_TO_STATE, BACK_AFTER_1012)


# --- scenario failures ----------------------------------------------------------------


def report_scenario_failure(room: Any, name: str | None, exc: Exception) -> None:
    """A scenario step broke off: report it once, under the name that says what broke."""
    if room is None or isinstance(exc, ConnectFailed):
        return  # connect failures are reported where they happen
    if isinstance(exc, JoinFailed):
        room.reporter.failure(JOIN, 0, exc)
    elif isinstance(exc, MoveFailed) and name is not None:
        room.reporter.failure(name, 0, exc)
    else:
        log.warning("room %s: %r", getattr(room, "code", "?"), exc, exc_info=exc)
        room.reporter.failure(SCENARIO, 0, exc)


# --- selection by tag --------------------------------------------------------------


def drop_untagged_user_classes(environment: Any) -> None:
    """With --tags / --exclude-tags, leave out the User classes with no task left.

    Locust filters tasks by tag but keeps a class whose tasks are all filtered out (and
    then fails to start it); a scenario is one class with one tagged task, so a tag
    selects whole scenarios here.
    """
    options = environment.parsed_options
    if options is None or not (getattr(options, "tags", None) or options.exclude_tags):
        return
    environment._filter_tasks_by_tags()
    kept = [cls for cls in environment.user_classes if cls.tasks]
    if not kept:
        raise ValueError(f"no scenario has tags {options.tags} (minus {options.exclude_tags})")
    environment.user_classes[:] = kept


# --- counters across workers ----------------------------------------------------------


def attach_counters(client_id: str, data: dict[str, Any]) -> None:
    """Worker: put this process's counters on the report going to the master."""
    from .metrics import COUNTERS

    data[COUNTER_KEY] = COUNTERS.snapshot()


@dataclass
class Aggregate:
    """Master: the latest counters of each worker, and the peak of their sum."""

    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    open_peak: int = 0
    local: ProcessCounters | None = None

    def on_worker_report(self, client_id: str, data: dict[str, Any]) -> None:
        counters = data.get(COUNTER_KEY)
        if counters is None:
            return
        self.latest[client_id] = counters
        self.open_peak = max(self.open_peak, sum(c["open_now"] for c in self.latest.values()))

    def totals(self) -> dict[str, Any]:
        reports = [self.local.snapshot()] if self.local else list(self.latest.values())
        firsts = [r["first_1012_wall"] for r in reports if r["first_1012_wall"] is not None]
        lasts = [r["last_back_wall"] for r in reports if r["last_back_wall"] is not None]
        first, last = (min(firsts) if firsts else None), (max(lasts) if lasts else None)
        return {
            "connections_peak": (
                self.local.open_peak if self.local else self.open_peak
            ),  # sampled with every worker report (3 s) when distributed
            "connections_peak_sum_of_workers": sum(r["open_peak"] for r in reports),
            "connects": sum(r["connects"] for r in reports),
            "resynced": sum(r["resynced"] for r in reports),
            "closes_1012": sum(r["closes_1012"] for r in reports),
            "back_1012": sum(r["back_1012"] for r in reports),
            "abandoned_1012": sum(r.get("abandoned_1012", 0) for r in reports),
            "storm_s": round(last - first, 3) if first is not None and last is not None else None,
            "workers": len(reports),
        }


AGGREGATE = Aggregate()


# --- the verdict ------------------------------------------------------------------------


def _row(entry: Any, duration: float) -> dict[str, Any]:
    pct = entry.get_response_time_percentile
    count = entry.num_requests
    return {
        "count": count,
        "failures": entry.num_failures,
        "p50_ms": pct(0.50) if count else None,
        "p95_ms": pct(0.95) if count else None,
        "p99_ms": pct(0.99) if count else None,
        "max_ms": round(entry.max_response_time, 1) if count else None,
        "avg_ms": round(entry.avg_response_time, 1) if count else None,
        "per_s": round(count / duration, 2) if duration > 0 else None,
    }


def build(environment: Any) -> dict[str, Any]:
    stats = environment.stats
    total = stats.total
    end = total.last_request_timestamp or time.time()
    duration = max(end - total.start_time, 0.0) if total.start_time else 0.0
    rows: dict[str, dict[str, Any]] = {}
    names = [name for (name, method) in stats.entries if method == REQUEST_TYPE]
    for name in [*[n for n in ORDER if n in names], *sorted(set(names) - set(ORDER))]:
        rows[name] = _row(stats.entries[(name, REQUEST_TYPE)], duration)
    errors = [
        {"name": e.name, "error": e.error, "occurrences": e.occurrences}
        for e in stats.errors.values()
    ]
    lost = sum(e["occurrences"] for e in errors if is_loss(str(e["error"])))
    not_back = sum(e["occurrences"] for e in errors if is_not_back(str(e["error"])))
    failures = total.num_failures
    requests = total.num_requests
    fail_ratio = failures / requests if requests else 0.0

    def per_s(name: str) -> float | None:
        row = rows.get(name)
        return row["per_s"] if row else None

    checks: list[dict[str, Any]] = []
    for name in LATENCY_NAMES:
        row = rows.get(name)
        if row and row["count"]:
            limit = (
                CONFIG.threshold_move_p99_ms
                if name == MOVE_TO_OPPONENT
                else CONFIG.threshold_p99_ms
            )
            checks.append(_check(f"p99 {name} (ms)", row["p99_ms"], limit))
    checks.append(_check("lost deliveries", lost, CONFIG.max_lost))
    checks.append(_check("1012 never back", not_back, CONFIG.max_not_back))
    checks.append(_check("failure ratio", round(fail_ratio, 6), CONFIG.max_fail_ratio))
    checks.append(_check("measurements", requests, 1, at_least=True))
    options = environment.parsed_options
    return {
        "host": environment.host,
        "users": getattr(options, "num_users", None),
        "user_classes": [cls.__name__ for cls in environment.user_classes],
        "duration_s": round(duration, 1),
        "requests": rows,
        "moves_per_s": per_s(MOVE_TO_OPPONENT),
        "fanout_deliveries_per_s": per_s(FANOUT),
        "relay_deliveries_per_s": per_s(RELAY),
        "deliveries": sum(rows[n]["count"] for n in DELIVERY_NAMES if n in rows),
        "lost": lost,
        "failures": failures,
        "fail_ratio": fail_ratio,
        "errors": errors,
        "counters": AGGREGATE.totals(),
        "spectators_per_room": CONFIG.spectators_per_room,
        "thresholds": {"passed": all(c["ok"] for c in checks), "checks": checks},
    }


def _check(what: str, value: float | None, limit: float, at_least: bool = False) -> dict[str, Any]:
    ok = value is not None and (value >= limit if at_least else value <= limit)
    return {
        "what": what,
        "value": value,
        "op": ">=" if at_least else "<=",
        "limit": limit,
        "ok": ok,
    }


def finish(environment: Any) -> dict[str, Any]:
    """Summarize, log, write LOADTEST_SUMMARY_JSON, and set Locust's exit code."""
    result = build(environment)
    counters = result["counters"]
    log.info(
        "tictac summary: %s connections peak, %s moves/s, %s fan-out deliveries/s, "
        "%s lost, %s failures (ratio %.4f), 1012: %s closed / %s back (storm %s s)",
        counters["connections_peak"],
        result["moves_per_s"],
        result["fanout_deliveries_per_s"],
        result["lost"],
        result["failures"],
        result["fail_ratio"],
        counters["closes_1012"],
        counters["back_1012"],
        counters["storm_s"],
    )
    for check in result["thresholds"]["checks"]:
        level = logging.INFO if check["ok"] else logging.ERROR
        verdict = "ok" if check["ok"] else "FAILED"
        log.log(
            level,
            "threshold %s: %s (limit %s) %s",
            check["what"],
            check["value"],
            check["limit"],
            verdict,
        )
    if CONFIG.summary_json:
        path = Path(CONFIG.summary_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=str))
    environment.process_exit_code = 0 if result["thresholds"]["passed"] else 1
    return result
