"""One bounded headless Locust run: a master and --workers workers on this machine.

`Run` holds every process it started (the fleet's launcher too, so all can be stopped
together), starts the fleet when there is no --host, runs the swarm, asks the fleet for
its rolling restart --drain-at seconds after the spawning began, and stops everything:
Locust first (quick), then the fleet (it drains).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from devtools.processes import free_port

from .local_fleet import LocalFleet
from .local_procs import ROOT, Proc, RunError
from .local_progress import Progress

LOCUST_CONF = ROOT / "loadtest" / "locust.conf"
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
# Small, fast and strict: what tests/loadtest/test_loadtest_smoke.py runs.
SMOKE_ENV = {
    "MATCH_WEIGHT": "1",
    "FANOUT_WEIGHT": "1",
    "CHURN_WEIGHT": "1",
    "RELAY_WEIGHT": "1",
    "SPECTATORS_PER_ROOM": "5",
    "RELAY_MEMBERS": "3",
    "THINK_MIN_S": "0.1",
    "THINK_MAX_S": "0.3",
    "GAME_PAUSE_MIN_S": "0.1",
    "GAME_PAUSE_MAX_S": "0.3",
    "CHURN_HOLD_MIN_S": "0.5",
    "CHURN_HOLD_MAX_S": "2",
    "MAX_LOST": "0",
    "MAX_FAIL_RATIO": "0",
}


@dataclass
class Run:
    args: argparse.Namespace
    out: Path
    procs: list[Proc] = field(default_factory=list)
    fleet: LocalFleet | None = None
    host: str = ""

    def start_fleet(self) -> None:
        self.fleet = LocalFleet(self.args, self.out / "fleet")
        self.procs.append(self.fleet.start())
        self.host = self.fleet.host
        self.fleet.wait_ready()

    # --- Locust --------------------------------------------------------------------

    def locust_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.args.smoke:
            for key, value in SMOKE_ENV.items():
                env.setdefault(key, value)
        env["LOADTEST_SUMMARY_JSON"] = str(self.out / "summary.json")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start_locust(self) -> Proc:
        args = self.args
        env = self.locust_env()
        python = sys.executable
        port = free_port()
        common = [python, "-m", "locust", "--config", str(LOCUST_CONF), "-f", str(LOCUSTFILE)]
        master_argv = [
            *common,
            "--master",
            "--master-bind-host",
            "127.0.0.1",
            "--master-bind-port",
            str(port),
            "--expect-workers",
            str(args.workers),
            "--expect-workers-max-wait",
            "60",
            "--host",
            self.host,
            "--users",
            str(args.users),
            "--spawn-rate",
            str(args.spawn_rate),
            "--run-time",
            f"{args.run_time}s",
            "--csv",
            str(self.out / "locust"),
            "--html",
            str(self.out / "report.html"),
            *args.locust_args,
            *args.user_classes,
        ]
        master = Proc("master", master_argv, self.out / "locust-master.log", env, echo=True)
        self.procs.append(master.start())
        for i in range(args.workers):
            worker_argv = [
                *common,
                "--worker",
                "--master-host",
                "127.0.0.1",
                "--master-port",
                str(port),
            ]
            worker = Proc(
                f"worker-{i + 1}", worker_argv, self.out / f"locust-worker-{i + 1}.log", env
            )
            self.procs.append(worker.start())
        print(
            f"locust: master + {args.workers} workers, {args.users} users, {args.run_time}s "
            f"against {self.host}"
        )
        return master

    def swarm(self) -> int:
        args = self.args
        fleet = self.fleet
        master = self.start_locust()
        started: float | None = None
        progress = Progress(self.out / "locust", every=5.0)  # a line every 5 s meanwhile
        limit = time.monotonic() + args.run_time + 180  # workers' wait, ramp-up, shutdown
        while master.alive():
            now = time.monotonic()
            if now > limit:
                raise RunError(f"locust did not finish in time:\n{master.tail()}")
            if started is None and (master.saw("Ramping to") or master.saw("Sending spawn jobs")):
                started = now
            if started is not None:
                progress.maybe_print(now)
            if fleet is not None:
                if (
                    started is not None
                    and args.drain_at is not None
                    and fleet.drain_started is None
                    and now - started >= args.drain_at
                ):
                    fleet.rolling_restart()
                fleet.watch_drain()
            for proc in self.procs:
                if proc.name.startswith("worker") and not proc.alive() and started is None:
                    raise RunError(f"{proc.name} exited early:\n{proc.tail()}")
            time.sleep(0.2)
        if fleet is not None:
            fleet.watch_drain()
        code = master.wait(5)
        if code is None:
            raise RunError("locust master did not exit")
        return code

    # --- stop -------------------------------------------------------------------------

    def stop_all(self) -> None:
        """Locust first (quick), then the fleet (it drains): every group, whatever happens."""
        fleet_proc = self.fleet.proc if self.fleet is not None else None
        for proc in reversed(self.procs):
            if proc is not fleet_proc:
                proc.stop(
                    timeout=10, signum=signal.SIGINT if proc.name == "master" else signal.SIGTERM
                )
        if self.fleet is not None:
            self.fleet.stop()
