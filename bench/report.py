"""The fan-out report: the table, the game's lines, the plot and the results files.

Results: a table on stdout and in bench/results/<stamp>.md, every step in
<stamp>.json, p99 and delivered against offered in <stamp>.png.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path

from bench.contenders import MOVES_ROW, RELAY_ROW
from bench.ladder import P99_LIMIT_MS, Step, best, topped
from bench.servers import RESULTS
from bench.socket_report import Report as SocketsReport


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def game_lines(results: dict[str, list[Step]], args: argparse.Namespace) -> list[str]:
    """The move path against the relay path, measured on the same servers and rooms."""
    lines: list[str] = []
    moves, relay = results.get(MOVES_ROW), results.get(RELAY_ROW)
    bm = best(moves) if moves else None
    if moves and relay:
        br = best(relay)
        if br is None:
            lines.append("game path / relay path: the relay path held no rung loss-free, no ratio")
        elif bm is None:
            lines.append(
                f"game path / relay path < {args.rates[0] / br.rate:.2f} x (max loss-free"
                f" deliveries/s: the move path held not even {args.rates[0]:,.0f}; relay"
                f" {br.rate:,.0f})"
            )
        else:
            sign, note = "=", ""
            if topped(moves, args) and topped(relay, args):
                sign, note = "~", "; both passed every rung: raise --rates"
            elif topped(moves, args):
                sign, note = ">=", "; the move path passed every rung"
            elif topped(relay, args):
                sign, note = "<=", "; the relay path passed every rung"
            lines.append(
                f"game path / relay path {sign} {bm.rate / br.rate:.2f} x (max loss-free"
                f" deliveries/s: {bm.rate:,.0f} vs {br.rate:,.0f}{note})"
            )
    step = bm or (moves[0] if moves else None)
    if step is not None and step.server_us_per_move is not None:
        where = (
            f"at {step.moves_per_s:,.0f} moves/s"
            if bm
            else f"at the lowest rung ({step.moves_per_s:,.0f} moves/s, not loss-free)"
        )
        db = (
            f", PostgreSQL backends {step.db_us_per_move:,.0f} us per move"
            if step.db_us_per_move is not None
            else ""
        )
        lines.append(
            f"move path {where}: replica CPU {step.server_us_per_move:,.0f} us per move"
            f" ({step.server_us_per_delivery:,.0f} us per delivery, {args.members} deliveries"
            f" per move){db}; one move in six is a rematch (two requests)"
        )
    return ["", *lines] if lines else []


def report(results: dict[str, list[Step]], sockets: str | None, args: argparse.Namespace) -> str:
    pubsub = best(results.get("tutorial relay, channels_redis PubSub", []))
    raw = best(results.get("raw ASGI broadcast, no Channels (1 process)", []))
    lines = [
        f"fan-out: {args.rooms} rooms x {args.members} members, {args.seconds:g} s per step,"
        f" limit p99 <= {P99_LIMIT_MS:g} ms and 100% delivered; {os.cpu_count()} cores shared"
        " with the client",
        "",
        "| contender | max loss-free deliveries/s | p50 ms | p99 ms | server us/delivery"
        " | server us/move | PostgreSQL us/move | refused actions | x PubSub | x raw |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, steps in results.items():
        b = best(steps)
        if b is None:
            s = steps[0]  # the lowest rung, for its figures
            errors = s.errors
            lines.append(
                f"| {name} | none (lowest rung {s.offered:,.0f}/s: {s.delivered * 100:.2f}%"
                f" delivered, {s.sent_rate / s.offered * 100:.0f}% offered) | {s.p50_ms:.1f} |"
                f" {s.p99_ms:.1f} | {s.server_us_per_delivery:.0f} | {fmt(s.server_us_per_move)} |"
                f" {fmt(s.db_us_per_move)} | {errors} | | |"
            )
            continue
        vs_pubsub = f"{b.rate / pubsub.rate:.2f}" if pubsub else "-"
        vs_raw = f"{b.rate / raw.rate:.2f}" if raw else "-"
        errors = b.errors  # at that rung
        more = "+" if topped(steps, args) else ""
        lines.append(
            f"| {name} | {b.rate:,.0f}{more} | {b.p50_ms:.1f} | {b.p99_ms:.1f} |"
            f" {b.server_us_per_delivery:.0f} | {fmt(b.server_us_per_move)} |"
            f" {fmt(b.db_us_per_move)} | {errors} | {vs_pubsub} | {vs_raw} |"
        )
    if any(topped(steps, args) for steps in results.values()):
        lines += ["", "+: loss-free at every rate tried; the ceiling is higher."]
    lines += game_lines(results, args)
    if sockets:
        lines += ["", sockets]
    return "\n".join(lines)


def plot(results: dict[str, list[Step]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, got) = plt.subplots(1, 2, figsize=(14, 5.5))
    for name, steps in results.items():
        game = name in (MOVES_ROW, RELAY_ROW)
        style = {"marker": "o", "label": name, "linewidth": 2.5 if game else 1.2}
        offered = [s.offered for s in steps]
        lat.plot(offered, [min(s.p99_ms, 5000) for s in steps], **style)
        got.plot(offered, [max(s.rate, 1.0) for s in steps], **style)
    lat.axhline(P99_LIMIT_MS, color="grey", linestyle="--", linewidth=1)
    lat.set_ylabel("p99 latency, ms (capped at 5 s)")
    lat.set_title("Fan-out p99 vs offered rate")
    everything = [s.offered for steps in results.values() for s in steps] or [1.0]
    span = [min(everything), max(everything)]
    got.plot(span, span, color="grey", linestyle="--", linewidth=1)
    got.set_ylabel("delivered deliveries/s")
    got.set_title("Delivered vs offered deliveries/s")
    for ax in (lat, got):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("offered deliveries/s")
    lat.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_results(
    stamp: str,
    text: str,
    args: argparse.Namespace,
    results: dict[str, list[Step]],
    probe: SocketsReport | None,
) -> None:
    """bench/results/<stamp>.md (the table), .json (every step) and .png (the plot)."""
    (RESULTS / f"{stamp}.md").write_text(text + "\n")
    (RESULTS / f"{stamp}.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "results": {k: [asdict(s) for s in v] for k, v in results.items()},
                "sockets": asdict(probe) if probe else None,
            },
            indent=1,
        )
    )
    plot(results, RESULTS / f"{stamp}.png")
