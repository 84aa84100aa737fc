"""`python -m devtools.fleet`: the local fleet from a terminal (`make fleet`) or a script
(`make loadtest`, through `--status-file`). Ctrl-C drains and stops it; SIGHUP rolls it."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from .launcher import (
    DEFAULT_DATABASE_URL,
    DEFAULT_LOG_DIR,
    DEFAULT_RABBITMQ_URL,
    DEFAULT_SETTINGS,
    Fleet,
    FleetError,
)

log = logging.getLogger("devtools.fleet")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.fleet",
        description="N web replicas behind HAProxy on one port. Ctrl-C drains and stops all; "
        "SIGHUP does a rolling restart.",
    )
    parser.add_argument("--replicas", type=int, default=3, help="web replicas (default 3)")
    parser.add_argument("--port", type=int, default=8000, help="load balancer port (8000)")
    parser.add_argument(
        "--replica-base-port",
        type=int,
        default=None,
        help="port of web-1, web-N on base+N-1 (default: --port + 1)",
    )
    parser.add_argument("--workers", type=int, default=0, help="worker processes (default 0)")
    parser.add_argument(
        "--worker-command",
        default=None,
        help="management command the workers run; without it --workers is ignored",
    )
    parser.add_argument(
        "--settings",
        default=os.environ.get("DJANGO_SETTINGS_MODULE", DEFAULT_SETTINGS),
        help="DJANGO_SETTINGS_MODULE (default: the environment's, else config.settings.local)",
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--rabbitmq-url", default=DEFAULT_RABBITMQ_URL)
    parser.add_argument("--log-dir", type=Path, default=DEFAULT_LOG_DIR)
    parser.add_argument(
        "--maxconn", type=int, default=None, help="HAProxy maxconn (default: fits ulimit -n)"
    )
    parser.add_argument(
        "--status-file",
        type=Path,
        default=None,
        help="keep a JSON status here for scripts: state (starting, ready, rolling, stopped),"
        " the balancer's URL, rolling restarts done",
    )
    return parser.parse_args(argv)


class _Stop(Exception):
    """SIGTERM to the launcher: leave the `with` block the way Ctrl-C does."""


@dataclass
class _Requests:
    rolling: bool = False


@dataclass
class Status:
    """What the CLI tells scripts (loadtest/run_local.py) through `--status-file`: JSON,
    replaced atomically, so a reader never sees half of it."""

    path: Path | None
    state: str = "starting"
    lb_url: str = ""
    rolls_done: int = 0

    def set(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self, key, value)
        if self.path is None:
            return
        body = {"state": self.state, "lb_url": self.lb_url, "rolls_done": self.rolls_done}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(body))
        os.replace(partial, self.path)

    @staticmethod
    def read(path: Path) -> dict[str, Any]:
        """The status a launcher wrote; {} before its first write."""
        try:
            found: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return found


def _watch(fleet: Fleet, requests: _Requests, status: Status) -> None:
    """Report replicas that die, roll on SIGHUP, give up if HAProxy dies."""
    reported: set[str] = set()
    while True:
        if requests.rolling:
            requests.rolling = False
            log.info("rolling restart")
            status.set(state="rolling")
            fleet.rolling_restart()
            status.set(state="ready", rolls_done=status.rolls_done + 1)
            log.info("rolling restart done")
        if not fleet.haproxy.alive:
            raise FleetError(f"haproxy exited ({fleet.haproxy.log_path}):\n{fleet.haproxy.tail()}")
        for replica in fleet.replicas:
            if replica.alive:
                reported.discard(replica.name)
            elif replica.name not in reported:
                reported.add(replica.name)
                log.warning(
                    "%s exited with %s; see %s",
                    replica.name,
                    replica.returncode,
                    replica.log_path,
                )
        time.sleep(1)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="fleet: %(message)s", stream=sys.stdout)
    if args.workers and not args.worker_command:
        log.warning("--workers %d without --worker-command: no workers started", args.workers)
    requests = _Requests()
    status = Status(args.status_file)
    status.set(state="starting")

    def on_int(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    def on_hup(signum: int, frame: FrameType | None) -> None:
        requests.rolling = True

    # Explicitly: a shell starts background jobs with SIGINT ignored, and Python keeps that.
    signal.signal(signal.SIGINT, on_int)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    fleet = Fleet(
        args.replicas,
        port=args.port,
        replica_base_port=args.replica_base_port or args.port + 1,
        workers=args.workers,
        worker_command=args.worker_command,
        settings=args.settings,
        database_url=args.database_url,
        rabbitmq_url=args.rabbitmq_url,
        log_dir=args.log_dir,
        maxconn=args.maxconn,
        die_with_parent=True,
    )
    try:
        with fleet:
            for r in fleet.replicas:
                print(f"  {r.name:<9} pid {r.pid!s:<7} {r.url:<24} log {r.log_path}")
            for w in fleet.workers:
                print(f"  {w.name:<9} pid {w.pid!s:<7} {'':<24} log {w.log_path}")
            h = fleet.haproxy
            print(f"  {h.name:<9} pid {h.pid!s:<7} {fleet.lb_url:<24} cfg {fleet.config_path}")
            print(f"play on {fleet.lb_url}  (Ctrl-C stops all; kill -HUP {os.getpid()} rolls)")
            sys.stdout.flush()
            status.set(state="ready", lb_url=fleet.lb_url)
            _watch(fleet, requests, status)
    except (KeyboardInterrupt, _Stop):
        print("fleet: stopped")
        return 0
    except FleetError as exc:
        print(f"fleet: {exc}", file=sys.stderr)
        return 1
    finally:
        status.set(state="stopped")
    return 0
