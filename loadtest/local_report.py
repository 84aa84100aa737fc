"""What `make loadtest` adds to the master's summary.json, and the table it prints.

The master writes the summary (loadtest/summary.py); this adds the machine, the fleet
(its rolling restart, what the replicas' logs say happened) and the workers' client
diagnostics, then prints the table loadtest/README.md shows.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
from pathlib import Path
from typing import Any

from .local_fleet import LocalFleet

SCENARIO_NAMES = {
    "MatchUser": "ws move->opponent",
    "FanoutUser": "ws fanout",
    "ChurnUser": "ws connect->state",
    "RelayUser": "ws relay",
}
ROWS = (
    "ws move->opponent",
    "ws fanout",
    "ws relay",
    "ws connect->state",
    "ws 1012->back",
)


def complete(
    summary: dict[str, Any], args: argparse.Namespace, out: Path, fleet: LocalFleet | None
) -> None:
    """Add the machine, the fleet and the client diagnostics to the master's summary."""
    summary["machine"] = machine()
    summary["fleet"] = {
        "replicas": None if args.host else args.replicas,
        "drain_s": fleet.drain_s if fleet is not None else None,
        "locust_workers": args.workers,
        "incidents": None if args.host else fleet_incidents(out / "fleet"),
    }
    summary["client_warnings"] = client_warnings(out)


def unmeasured(summary: dict[str, Any]) -> list[str]:
    """The measurements of the scenarios that ran and have no sample (the smoke's check)."""
    return [
        name
        for cls, name in SCENARIO_NAMES.items()
        if cls in summary.get("user_classes", [])
        and not summary["requests"].get(name, {}).get("count")
    ]


def fleet_incidents(log_dir: Path) -> dict[str, Any]:
    """What the replicas' logs say happened under the swarm (the local broker is shared)."""
    reconnects: list[str] = []
    errors = 0
    for path in sorted(log_dir.glob("web-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if "reconnected to the broker" in line:
                reconnects.append(f"{path.stem} {line[11:19]}")
            elif " ERROR " in line and "Service Unavailable" not in line:
                errors += 1
    return {"broker_reconnects": reconnects, "error_lines": errors}


def client_warnings(out: Path) -> dict[str, int]:
    """The workers' diagnostics (expectation.Expectation._log): slow, lost, not applied."""
    counts = {"slow": 0, "lost": 0, "not applied": 0, "nobody got": 0}
    for path in out.glob("locust-worker-*.log"):
        for line in path.read_text(errors="replace").splitlines():
            for key in counts:
                if f" {key}" in line and "WARNING/loadtest" in line:
                    counts[key] += 1
    return counts


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, IndexError, ValueError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _drain(fleet: LocalFleet | None) -> str:
    if fleet is None or fleet.drain_started is None:
        return ""
    took = (
        f"rolled in {fleet.drain_done - fleet.drain_started:.1f}s"
        if fleet.drain_done is not None
        else "roll still running at the end"
    )
    return f"rolling restart {took}; "


def print_summary(summary: dict[str, Any], out: Path, fleet: LocalFleet | None) -> None:
    counters = summary.get("counters", {})
    requests: dict[str, dict[str, Any]] = summary.get("requests", {})
    total_requests = sum(r["count"] for r in requests.values())
    storm = counters.get("storm_s")
    lines = [
        "",
        f"tictac-fleet load test: {summary.get('users')} users "
        f"({', '.join(summary.get('user_classes', []))}), {summary.get('duration_s')}s "
        f"against {summary.get('host')}",
        f"  connections held (peak)   {counters.get('connections_peak')}"
        f"   (connections opened: {counters.get('connects')})",
        f"  moves/s                   {summary.get('moves_per_s') or 0}",
        f"  fan-out deliveries/s      {summary.get('fanout_deliveries_per_s') or 0}"
        f"   ({summary.get('spectators_per_room')} spectators per room)",
        f"  relay deliveries/s        {summary.get('relay_deliveries_per_s') or 0}",
        f"  lost deliveries           {summary.get('lost')}"
        f"   (healed by a reconnect's state: {counters.get('resynced')})",
        f"  failures                  {summary.get('failures')} of {total_requests}"
        f" ({100 * float(summary.get('fail_ratio') or 0):.2f}%)",
        f"  drain (1012)              {_drain(fleet)}{counters.get('closes_1012')} sockets "
        f"closed with 1012, {counters.get('back_1012')} back"
        + (
            f" ({counters['abandoned_1012']} left while coming back)"
            if counters.get("abandoned_1012")
            else ""
        )
        + (f", the last {storm:.1f}s after the first close" if storm is not None else ""),
        "",
        f"  {'request type':<20} {'count':>8} {'fail':>6} {'p50':>7} {'p95':>7} {'p99':>7}"
        f" {'max':>7}  ms",
    ]
    names = [n for n in ROWS if n in requests] + [n for n in requests if n not in ROWS]
    for name in names:
        row = requests[name]
        if row["max_ms"] is not None:  # Locust's percentiles are rounded buckets
            for key in ("p50_ms", "p95_ms", "p99_ms"):
                row[key] = min(row[key], row["max_ms"])
        lines.append(
            f"  {name:<20} {row['count']:>8} {row['failures']:>6} {_ms(row['p50_ms']):>7}"
            f" {_ms(row['p95_ms']):>7} {_ms(row['p99_ms']):>7} {_ms(row['max_ms']):>7}"
        )
    errors = summary.get("errors", [])
    if errors:
        lines.append("")
        lines.append("  failures by kind:")
        for err in errors:
            lines.append(f"    {err['occurrences']:>5}  {err['name']}: {err['error']}")
    lines.append("")
    thresholds = summary.get("thresholds", {})
    for check in thresholds.get("checks", []):
        verdict = "ok" if check["ok"] else "FAILED"
        lines.append(
            f"  threshold {check['what']:<28} {check['value']!s:>10} {check['op']} "
            f"{check['limit']}  {verdict}"
        )
    incidents = summary.get("fleet", {}).get("incidents")
    if incidents and incidents["broker_reconnects"]:
        lines.append(
            f"  note: the replicas lost RabbitMQ {len(incidents['broker_reconnects'])} time(s) "
            f"during the run ({', '.join(incidents['broker_reconnects'][:6])}): the local broker "
            "is shared, something restarted it"
        )
    warnings = summary.get("client_warnings", {})
    if any(warnings.values()):
        shown = ", ".join(f"{v} {k}" for k, v in warnings.items() if v)
        lines.append(f"  client diagnostics: {shown} (locust-worker-*.log, WARNING/loadtest)")
    lines.append(f"  verdict: {'PASSED' if thresholds.get('passed') else 'FAILED'}")
    lines.append(f"  report: {out / 'report.html'}  (CSVs, logs and summary.json beside it)")
    print("\n".join(lines))
