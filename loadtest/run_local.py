"""`make loadtest`: a local fleet, a bounded headless Locust swarm (master + workers), a verdict.

    .venv-loadtest/bin/python loadtest/run_local.py                 # 60 s, 3 replicas, drain
    .venv-loadtest/bin/python loadtest/run_local.py --smoke --host ws://127.0.0.1:PORT

Without --host it starts the fleet with the APP's virtualenv
(`.venv/bin/python -m devtools.fleet --replicas 3 --port <8000 or a free port>`), waits for
`/readyz` through the load balancer, runs every scenario (weights from the environment,
see loadtest/README.md) from a Locust master and --workers workers, and once, a quarter
into the run, asks the fleet for a rolling restart (SIGHUP to the launcher): every
replica drains with 1012 in turn, so the clients' reconnect storm is measured
(`ws 1012->back`).

Writes Locust's HTML report, its CSVs, every process's log and `summary.json` under
`loadtest/reports/<timestamp>/`, prints a short table, and exits non-zero when a
threshold failed (1) or the fleet or Locust did not run (2). Always stops what it
started (process groups), on Ctrl-C and SIGTERM too.

Only the standard library: this file runs under the load-test virtualenv, the fleet
under the app's. Its parts: local_cli.py (options), local_procs.py (the children),
local_fleet.py (the fleet), local_swarm.py (Locust), local_report.py (the table).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "loadtest" / "reports"

# This script's modules and the fleet launcher's port and health helpers (standard
# library only, so this Locust-venv script can import them from the repository).
sys.path.insert(0, str(ROOT))
from loadtest.local_cli import parse_args  # noqa: E402
from loadtest.local_procs import RunError  # noqa: E402
from loadtest.local_report import complete, print_summary, unmeasured  # noqa: E402
from loadtest.local_swarm import Run  # noqa: E402


class Abort(Exception):
    """Ctrl-C or SIGTERM: stop everything that was started."""


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or REPORTS / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    run = Run(args, out)

    interrupts = 0

    def on_signal(signum: int, frame: object) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:  # a second Ctrl-C: no more waiting
            for proc in run.procs:
                proc.kill_group()
            os._exit(130)
        raise Abort(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 2
    try:
        if args.host:
            run.host = args.host
        else:
            run.start_fleet()
        locust_code = run.swarm()
        summary_path = out / "summary.json"
        if not summary_path.exists():
            raise RunError(f"no summary from the master (exit {locust_code}); see {out}")
        summary = json.loads(summary_path.read_text())
        complete(summary, args, out, run.fleet)
        summary_path.write_text(json.dumps(summary, indent=2))
        print_summary(summary, out, run.fleet)
        code = 0 if locust_code == 0 else 1
        if args.smoke:
            missing = unmeasured(summary)
            if missing:
                print(f"smoke: no measurement for {', '.join(missing)}")
                code = 1
    except Abort as exc:
        print(f"\nstopping ({exc})")
        code = 130
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    finally:
        signal.signal(signal.SIGINT, on_signal)
        with contextlib.suppress(Abort):
            run.stop_all()
        for proc in run.procs:  # in case stop_all itself was interrupted
            proc.kill_group()
    return code


if __name__ == "__main__":
    sys.exit(main())
