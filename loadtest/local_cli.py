"""`loadtest/run_local.py`'s command line: its options, the defaults and the --smoke ones.

Options it does not know go to the Locust master as they are (e.g. `--tags churn`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from .local_fleet import APP_PYTHON, DEFAULT_DATABASE_URL

DEFAULTS = {"users": 120, "spawn_rate": 20, "run_time": 60, "replicas": 3}
SMOKE_DEFAULTS = {"users": 8, "spawn_rate": 8, "run_time": 15, "replicas": 2}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="loadtest/run_local.py",
        description="Local fleet + headless Locust (master and workers) + thresholds.",
    )
    parser.add_argument(
        "--host", help="target an existing deployment (ws://, wss://) instead of starting a fleet"
    )
    parser.add_argument("--replicas", type=int, default=None, help="3 (--smoke: 2)")
    parser.add_argument("--port", type=int, default=None, help="load balancer port (8000 if free)")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--app-python", default=str(APP_PYTHON), help="the app virtualenv's python")
    parser.add_argument("--users", type=int, default=None, help="120 (--smoke: 8)")
    parser.add_argument("--spawn-rate", type=float, default=None, help="20 (--smoke: 8)")
    parser.add_argument("--run-time", type=int, default=None, help="seconds: 60 (--smoke: 15)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--drain-at",
        type=float,
        default=None,
        help="seconds into the swarm to roll the fleet (default: a quarter of the run time)",
    )
    parser.add_argument("--no-drain", action="store_true", help="no rolling restart")
    parser.add_argument(
        "--smoke", action="store_true", help="small, short and strict (the smoke test)"
    )
    parser.add_argument("--out", type=Path, default=None, help="report directory")
    parser.add_argument("--fleet-timeout", type=float, default=120)
    parser.add_argument("--fleet-stop-timeout", type=float, default=60)
    parser.add_argument("user_classes", nargs="*", help="only these User classes (default: all)")
    args, extra = parser.parse_known_args(argv)
    args.locust_args = extra  # anything else goes to the Locust master (e.g. --tags churn)
    for key, value in (SMOKE_DEFAULTS if args.smoke else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.no_drain or args.host:
        args.drain_at = None
    elif args.drain_at is None:
        args.drain_at = args.run_time / 4
    return args
