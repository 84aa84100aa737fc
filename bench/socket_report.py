"""The `python -m bench.sockets` report: what the probes found, and its Markdown tables."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bench.socket_probes import Connects, Idle
from bench.socket_trace import Site, Trace
from bench.socket_wire import Wire


@dataclass
class Report:
    idle: list[Idle] = field(default_factory=list)
    connects: list[Connects] = field(default_factory=list)
    trace: Trace | None = None
    wire: list[Wire] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    browser_headers: bool = False


def table(report: Report) -> str:
    lines = []
    if report.env:
        lines += ["replica env: " + " ".join(f"{k}={v}" for k, v in report.env.items()), ""]
    if report.browser_headers:
        lines += ["client: Chrome's handshake headers (User-Agent, Origin, Accept-*, ...)", ""]
    if report.idle or report.connects:
        cols = [("deflate offered", True), ("not offered", False)]
        idle = {i.deflate_offered: i for i in report.idle}
        conn = {c.deflate_offered: c for c in report.connects}
        lines += ["| one game replica | deflate offered | not offered |", "|---|---|---|"]

        def row(label: str, cell: Callable[[bool], str]) -> None:
            lines.append(f"| {label} | " + " | ".join(cell(d) for _, d in cols) + " |")

        if idle:
            row(
                "idle KiB per socket",
                lambda d: f"{idle[d].kib_per_socket:.1f}" if d in idle else "",
            )
            row(
                "idle sockets, RSS MiB",
                lambda d: (
                    f"{idle[d].sockets}, {idle[d].rss_before_mib:.0f}"
                    f" -> {idle[d].rss_after_mib:.0f}"
                    if d in idle
                    else ""
                ),
            )
            row("negotiated", lambda d: f"`{idle[d].negotiated}`" if d in idle else "")
        if conn:
            row(
                f"connects/s ({next(iter(conn.values())).concurrency} in flight)",
                lambda d: f"{conn[d].per_second:.0f} ({conn[d].sockets})" if d in conn else "",
            )
            row(
                "replica CPU ms per connect",
                lambda d: f"{conn[d].cpu_ms_per_connect:.2f}" if d in conn else "",
            )
        failed = sum(i.failed for i in report.idle) + sum(c.failed for c in report.connects)
        if failed:
            lines.append(f"\n{failed} sockets failed to open")
    if report.trace:
        t = report.trace
        lines += [
            "",
            f"tracemalloc in the replica, {t.sockets} idle sockets, deflate"
            f" {'offered' if t.deflate_offered else 'not offered'}:"
            f" {t.total_kib_per_socket:.2f} KiB of Python allocations per socket"
            f" ({t.frames} frames deep)",
            *site_table("file", t.by_file),
            *site_table("line (<- the first caller outside that file and asyncio)", t.by_line),
            *site_table("repo line (everything allocated under it)", t.by_repo_line),
        ]
    if report.wire:
        lines += [
            "",
            "server-to-client bytes for one spectator during a game"
            f" ({report.wire[0].frames} frames)",
            "",
            "| permessage-deflate | payload bytes | wire bytes | zlib KiB kept per idle socket"
            " | encode us/frame |",
            "|---|---|---|---|---|",
            *(
                f"| {w.setting} | {w.payload_bytes} | {w.wire_bytes} |"
                f" {w.zlib_kib_per_idle_socket:.1f} | {w.encode_us_per_frame:.0f} |"
                for w in report.wire
            ),
        ]
    return "\n".join(lines)


def site_table(heading: str, sites: list[Site]) -> list[str]:
    """One tracemalloc table: where, bytes and blocks per socket."""
    return [
        "",
        f"| {heading} | bytes/socket | blocks/socket |",
        "|---|---|---|",
        *(f"| {s.where} | {s.bytes_per_socket:.0f} | {s.blocks_per_socket:.1f} |" for s in sites),
    ]
