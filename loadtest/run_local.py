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
under the app's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
LOCUST_CONF = ROOT / "loadtest" / "locust.conf"
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
APP_PYTHON = ROOT / ".venv" / "bin" / "python"
REPORTS = ROOT / "loadtest" / "reports"

# The fleet launcher's port and health helpers (standard library only, so this
# Locust-venv script can import them from the repository).
sys.path.insert(0, str(ROOT))
from devtools.fleet import Status  # noqa: E402
from devtools.processes import free_port, http_status, port_free  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/tictac_loadtest"
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


class Abort(Exception):
    """Ctrl-C or SIGTERM: stop everything that was started."""


class RunError(Exception):
    """The fleet or Locust did not run as expected (exit 2)."""


@dataclass
class Proc:
    """A child in its own process group, its output in a log file (and maybe on screen)."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str]
    echo: bool = False
    popen: subprocess.Popen[bytes] | None = None
    lines: list[str] = field(default_factory=list)
    _pump: threading.Thread | None = None
    _log: IO[str] | None = None

    def start(self) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("a", encoding="utf-8")
        self._log.write(f"--- {datetime.now().isoformat(timespec='seconds')} {self.argv}\n")
        self._log.flush()
        self.popen = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: Ctrl-C is ours to pass on
        )
        self._pump = threading.Thread(target=self._copy, daemon=True)
        self._pump.start()
        return self

    def _copy(self) -> None:
        assert self.popen is not None
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            log = self._log
            if log is not None:
                with contextlib.suppress(ValueError):  # closed by kill_group meanwhile
                    log.write(line)
                    log.flush()
            if self.echo:
                sys.stdout.write(f"  {self.name} | {line}")
                sys.stdout.flush()

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait(self, timeout: float) -> int | None:
        if self.popen is None:
            return None
        try:
            return self.popen.wait(timeout=max(timeout, 0))
        except subprocess.TimeoutExpired:
            return None

    def send(self, signum: int) -> None:
        if self.alive() and self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill_group(self) -> None:
        """SIGKILL whatever is left in this child's process group."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        self.wait(5)
        if self._pump is not None:
            self._pump.join(timeout=2)
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self, timeout: float, signum: int = signal.SIGTERM) -> None:
        """`signum` to the leader, wait up to `timeout`, then SIGKILL the group."""
        self.send(signum)
        self.wait(timeout)
        self.kill_group()

    def tail(self, n: int = 30) -> str:
        return "".join(self.lines[-n:])

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)


@dataclass
class Run:
    args: argparse.Namespace
    out: Path
    procs: list[Proc] = field(default_factory=list)
    fleet: Proc | None = None
    host: str = ""
    drain_started: float | None = None
    drain_done: float | None = None

    @property
    def status_path(self) -> Path:
        """The launcher's `--status-file`: ready, rolling restarts done."""
        return self.out / "fleet" / "status.json"

    # --- the fleet ---------------------------------------------------------------

    def start_fleet(self) -> None:
        args = self.args
        port = args.port
        if port is None:
            port = 8000 if port_free(8000) else free_port()
        elif not port_free(port):
            raise RunError(f"port {port} is taken on 127.0.0.1 (is `make fleet` running?)")
        if not Path(args.app_python).exists():
            raise RunError(f"{args.app_python} not found: run `make setup` first")
        argv = [
            str(args.app_python),
            "-m",
            "devtools.fleet",
            "--replicas",
            str(args.replicas),
            "--port",
            str(port),
            "--database-url",
            args.database_url,
            "--log-dir",
            str(self.out / "fleet"),
            "--status-file",
            str(self.status_path),
        ]
        if not _ports_free(port + 1, args.replicas):  # replicas default to port+1 ... port+N
            argv += ["--replica-base-port", str(_free_block(args.replicas))]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
        self.fleet = Proc("fleet", argv, self.out / "fleet" / "launcher.log", env).start()
        self.procs.append(self.fleet)
        self.host = f"ws://127.0.0.1:{port}"
        print(f"fleet: {args.replicas} replicas behind HAProxy on {self.host} (starting)")
        deadline = time.monotonic() + args.fleet_timeout
        while time.monotonic() < deadline:
            if not self.fleet.alive():
                raise RunError(f"the fleet exited:\n{self.fleet.tail()}")
            # The launcher says `ready` once every replica is UP in HAProxy.
            if (
                Status.read(self.status_path).get("state") == "ready"
                and http_status(f"http://127.0.0.1:{port}/readyz", timeout=2.0) == 200
            ):
                print(f"fleet: ready (launcher pid {self.fleet.pid}, logs {self.out / 'fleet'})")
                return
            time.sleep(0.3)
        raise RunError(
            f"the fleet was not ready within {args.fleet_timeout:.0f}s:\n{self.fleet.tail()}"
        )

    def rolling_restart(self) -> None:
        """SIGHUP: the launcher drains and restarts one replica at a time (devtools/README.md)."""
        if self.fleet is None or not self.fleet.alive():
            return
        self.drain_started = time.monotonic()
        print(f"drain: rolling restart of the fleet ({time.strftime('%H:%M:%S')})")
        self.fleet.send(signal.SIGHUP)

    def watch_drain(self) -> None:
        if self.drain_started is None or self.drain_done is not None or self.fleet is None:
            return
        if Status.read(self.status_path).get("rolls_done", 0) >= 1:
            self.drain_done = time.monotonic()
            print(f"drain: rolling restart done in {self.drain_done - self.drain_started:.1f}s")

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
        master = self.start_locust()
        started: float | None = None
        limit = time.monotonic() + args.run_time + 180  # workers' wait, ramp-up, shutdown
        while master.alive():
            now = time.monotonic()
            if now > limit:
                raise RunError(f"locust did not finish in time:\n{master.tail()}")
            if started is None and (master.saw("Ramping to") or master.saw("Sending spawn jobs")):
                started = now
            if (
                started is not None
                and self.fleet is not None
                and args.drain_at is not None
                and self.drain_started is None
                and now - started >= args.drain_at
            ):
                self.rolling_restart()
            self.watch_drain()
            for proc in self.procs:
                if proc.name.startswith("worker") and not proc.alive() and started is None:
                    raise RunError(f"{proc.name} exited early:\n{proc.tail()}")
            time.sleep(0.2)
        self.watch_drain()
        code = master.wait(5)
        if code is None:
            raise RunError("locust master did not exit")
        return code

    # --- stop -------------------------------------------------------------------------

    def stop_all(self) -> None:
        """Locust first (quick), then the fleet (it drains): every group, whatever happens."""
        for proc in reversed(self.procs):
            if proc is not self.fleet:
                proc.stop(
                    timeout=10, signum=signal.SIGINT if proc.name == "master" else signal.SIGTERM
                )
        if self.fleet is not None:
            if self.fleet.alive():
                print("fleet: stopping (drain)")
            self.fleet.stop(timeout=self.args.fleet_stop_timeout)


def _ports_free(first: int, count: int) -> bool:
    return all(port_free(first + i) for i in range(count))


def _free_block(count: int) -> int:
    """A base port with `count` free ports from it (the replicas' ports)."""
    for _ in range(50):
        base = free_port()
        if base + count < 65535 and _ports_free(base, count):
            return base
    raise RunError("no block of free ports for the replicas")


# --- the summary ------------------------------------------------------------------------


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
    """The workers' diagnostics (rooms.Expectation._log): slow, lost, not applied."""
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


def print_summary(summary: dict[str, Any], run: Run) -> None:
    counters = summary.get("counters", {})
    requests: dict[str, dict[str, Any]] = summary.get("requests", {})
    total_requests = sum(r["count"] for r in requests.values())
    drain = ""
    if run.drain_started is not None:
        took = (
            f"rolled in {run.drain_done - run.drain_started:.1f}s"
            if run.drain_done is not None
            else "roll still running at the end"
        )
        drain = f"rolling restart {took}; "
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
        f"  drain (1012)              {drain}{counters.get('closes_1012')} sockets closed with "
        f"1012, {counters.get('back_1012')} back"
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
    lines.append(f"  report: {run.out / 'report.html'}  (CSVs, logs and summary.json beside it)")
    print("\n".join(lines))


# --- main --------------------------------------------------------------------------------


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
    defaults = (
        {"users": 8, "spawn_rate": 8, "run_time": 15, "replicas": 2}
        if args.smoke
        else {
            "users": 120,
            "spawn_rate": 20,
            "run_time": 60,
            "replicas": 3,
        }
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.no_drain or args.host:
        args.drain_at = None
    elif args.drain_at is None:
        args.drain_at = args.run_time / 4
    return args


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
        summary["machine"] = machine()
        summary["fleet"] = {
            "replicas": None if args.host else args.replicas,
            "drain_s": (
                round(run.drain_done - run.drain_started, 1)
                if run.drain_started is not None and run.drain_done is not None
                else None
            ),
            "locust_workers": args.workers,
            "incidents": None if args.host else fleet_incidents(out / "fleet"),
        }
        summary["client_warnings"] = client_warnings(out)
        summary_path.write_text(json.dumps(summary, indent=2))
        print_summary(summary, run)
        code = 0 if locust_code == 0 else 1
        if args.smoke:
            missing = [
                name
                for cls, name in SCENARIO_NAMES.items()
                if cls in summary.get("user_classes", [])
                and not summary["requests"].get(name, {}).get("count")
            ]
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
