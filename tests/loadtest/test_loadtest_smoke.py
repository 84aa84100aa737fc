"""Smoke of the Locust scenarios (loadtest/): every scenario for a few seconds, small numbers,
through a real 2-replica fleet (HAProxy, RabbitMQ, a throwaway PostgreSQL database), with
one replica drained (1012) mid-run. Any lost delivery or failure fails it.

Locust runs in its own virtualenv, `.venv-loadtest` (requirements/loadtest.txt); `make test`
creates it first. Without it this test fails and says how to create it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from devtools.fleet import Fleet

pytestmark = [pytest.mark.e2e, pytest.mark.fleet]

ROOT = Path(__file__).resolve().parents[2]
LOADTEST_PYTHON = ROOT / ".venv-loadtest" / "bin" / "python"
CREATE_VENV = (
    "python3.11 -m venv .venv-loadtest && "
    ".venv-loadtest/bin/python -m pip install -r requirements/loadtest.txt"
)
# Short drain so the mid-run restart of web-1 fits in the swarm's 15 seconds.
FLEET_ENV = {
    "MAX_SOCKETS_PER_ADDRESS": "100000",  # the swarm comes from one address
    "DRAIN_READINESS_DELAY_SECONDS": "0.5",
    "DRAIN_WINDOW_SECONDS": "1",
    "GRACEFUL_SHUTDOWN_SECONDS": "3",
}
SCENARIO_MEASUREMENTS = (
    "ws move->opponent",  # MatchUser (and FanoutUser's opponent)
    "ws fanout",  # FanoutUser
    "ws connect->state",  # ChurnUser (and every first connect)
    "ws relay",  # RelayUser
    "ws 1012->back",  # every scenario's sockets on the drained replica
)
_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def ws_connections(url: str) -> int:
    """`tictac_ws_connections` from one replica's /metrics (0 if it does not answer)."""
    try:
        with _no_proxy.open(f"{url}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return 0
    match = re.search(r"^tictac_ws_connections(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    return int(float(match.group(1))) if match else 0


def drain_web1_once(fleet: Fleet, failures: list[BaseException], stop: threading.Event) -> None:
    """Once the swarm holds sockets on web-1: SIGTERM it (1012 to each), start it again."""
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not stop.is_set():
            if ws_connections(fleet.replicas[0].url) >= 5:
                time.sleep(1)  # games under way
                fleet.restart(0)
                return
            time.sleep(0.2)
        failures.append(AssertionError("the swarm never held 5 sockets on web-1"))
    except BaseException as exc:
        failures.append(exc)


def test_every_scenario_runs_through_a_drain_without_loss_or_failure(
    database_url: str, rabbitmq_url: str, tmp_path: Path
) -> None:
    if not LOADTEST_PYTHON.exists():
        pytest.fail(
            f"{LOADTEST_PYTHON} does not exist: Locust lives in its own virtualenv. "
            f"Create it from the repository root with:\n  {CREATE_VENV}\n(`make test` does this.)"
        )
    out = tmp_path / "report"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")},
        # Latency is not what a smoke on a shared 2-core machine judges; losses are.
        "THRESHOLD_P99_MS": "10000",
        "THRESHOLD_MOVE_P99_MS": "10000",
    }
    with Fleet(
        2,
        settings="config.settings.test",
        database_url=database_url,
        rabbitmq_url=rabbitmq_url,
        log_dir=tmp_path / "fleet",
        env=FLEET_ENV,
    ) as fleet:
        started = time.monotonic()
        swarm = subprocess.Popen(
            [
                str(LOADTEST_PYTHON),
                "loadtest/run_local.py",
                "--smoke",
                "--host",
                fleet.lb_ws_url,
                "--out",
                str(out),
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        failures: list[BaseException] = []
        stop = threading.Event()
        drainer = threading.Thread(target=drain_web1_once, args=(fleet, failures, stop))
        drainer.start()
        try:
            output, _ = swarm.communicate(timeout=120)
        finally:
            if swarm.poll() is None:
                os.killpg(swarm.pid, 9)
                swarm.wait()
            stop.set()
            drainer.join()
        elapsed = time.monotonic() - started

    assert failures == [], failures
    summary_path = out / "summary.json"
    assert summary_path.exists(), output[-5000:]
    summary = json.loads(summary_path.read_text())
    print(output[output.find("tictac-fleet load test") :], f"\nswarm took {elapsed:.1f}s")
    assert swarm.returncode == 0, output[-5000:]
    assert summary["lost"] == 0, summary["errors"]
    assert summary["failures"] == 0, summary["errors"]
    counts = {
        name: summary["requests"].get(name, {}).get("count", 0) for name in SCENARIO_MEASUREMENTS
    }
    assert all(counts.values()), counts
    counters = summary["counters"]
    assert counters["closes_1012"] >= 5, counters
    # Every socket the drain closed came back (or left on purpose while coming back).
    assert counters["back_1012"] + counters["abandoned_1012"] == counters["closes_1012"], counters
