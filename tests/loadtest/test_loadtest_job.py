"""The load-test Job of k8s/overlays/loadtest, run here: the master's and the worker's exact
command lines, read out of the rendered manifest, against a real local fleet (one replica
behind HAProxy, RabbitMQ, a throwaway PostgreSQL database).

Only what cannot be the same outside the cluster changes: `/app/` (the image's working
copy) becomes this repository, `/reports` a temporary directory, `locust` the one of
`.venv-loadtest`, and the values of --host, --users, --spawn-rate, --run-time,
--expect-workers, --master-bind-port (and the worker's --master-host/--master-port) are
those of a few users for a few seconds on free ports. The thresholds come from the
environment as in the Job (its ConfigMap), with one of them made impossible: the run must
exit 1, print its reports into the log and fail the Job; with every threshold relaxed the
same command line exits 0. Neither outcome depends on timing: the impossible threshold
fails whatever was measured, and the relaxed ones hold once anything was measured.

Needs `.venv-k8s` (kubectl, `make k8s-tools`), `.venv-loadtest` (`make loadtest-venv`),
Debian's haproxy, PostgreSQL and RabbitMQ on 127.0.0.1, like the Locust smoke.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.fleet import Fleet
from devtools.processes import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.fleet]

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".venv-k8s" / "bin" / "kubectl"
LOADTEST_BIN = ROOT / ".venv-loadtest" / "bin"
FLEET_ENV = {"MAX_SOCKETS_PER_ADDRESS": "100000"}  # the swarm comes from one address
# Small scenarios (as run_local.py --smoke): a few sockets per room, short pauses.
SCENARIO_ENV = {
    "SPECTATORS_PER_ROOM": "3",
    "RELAY_MEMBERS": "3",
    "THINK_MIN_S": "0.1",
    "THINK_MAX_S": "0.3",
    "GAME_PAUSE_MIN_S": "0.1",
    "GAME_PAUSE_MAX_S": "0.3",
    "CHURN_HOLD_MIN_S": "0.5",
    "CHURN_HOLD_MAX_S": "1",
}
RELAXED = {
    "THRESHOLD_MOVE_P99_MS": "1000000",
    "THRESHOLD_P99_MS": "1000000",
    "MAX_NOT_BACK": "1000000",
    "MAX_LOST": "1000000",
    "MAX_FAIL_RATIO": "1",
}
IMPOSSIBLE = {**RELAXED, "MAX_FAIL_RATIO": "-1"}  # a failure ratio is never below 0
LOCAL_RUN = {"users": "4", "spawn-rate": "4", "run-time": "4s", "expect-workers": "1"}


def rendered_loadtest() -> list[dict[str, Any]]:
    if not KUBECTL.exists():
        pytest.fail(f"{KUBECTL} is missing: `make k8s-tools` installs it")
    proc = subprocess.run(
        [str(KUBECTL), "kustomize", str(ROOT / "k8s" / "overlays" / "loadtest")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def job_container(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (job,) = [d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == name]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return dict(container)


def configmap(docs: list[dict[str, Any]], prefix: str) -> dict[str, str]:
    (cm,) = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].rsplit("-", 1)[0] == prefix
    ]
    return dict(cm["data"])


def localize(argv: list[str], reports: Path, values: dict[str, str]) -> list[str]:
    """The Job's argv with the image's paths made local and `--name=value` options set."""
    out = []
    for arg in argv:
        arg = arg.replace("/app/", f"{ROOT}/").replace("/reports", str(reports))
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") and "=" in arg else None
        if name in values:
            arg = f"--{name}={values[name]}"
        out.append(arg)
    return out


@pytest.fixture(scope="module")
def job() -> dict[str, Any]:
    docs = rendered_loadtest()
    return {
        "master": job_container(docs, "locust-master"),
        "worker": job_container(docs, "locust-worker"),
        "config": configmap(docs, "tictac-loadtest"),
    }


@pytest.fixture
def fleet(database_url: str, rabbitmq_url: str, tmp_path: Path) -> Iterator[Fleet]:
    if not (LOADTEST_BIN / "locust").exists():
        pytest.fail(f"{LOADTEST_BIN}/locust is missing: `make loadtest-venv` creates it")
    with Fleet(
        1,
        settings="config.settings.test",
        database_url=database_url,
        rabbitmq_url=rabbitmq_url,
        log_dir=tmp_path / "fleet",
        env=FLEET_ENV,
    ) as started:
        yield started


def run_job(
    job: dict[str, Any], fleet: Fleet, tmp_path: Path, thresholds: dict[str, str]
) -> tuple[int, str, dict[str, Any]]:
    """The master Job's command and one worker's, locally; (exit code, log, summary)."""
    reports = tmp_path / "reports"
    reports.mkdir(parents=True)
    port = free_port()
    master_argv = localize(
        job["master"]["command"],
        reports,
        {**LOCAL_RUN, "host": fleet.lb_ws_url, "master-bind-port": str(port)},
    )
    worker_argv = localize(
        job["worker"]["command"], reports, {"master-host": "127.0.0.1", "master-port": str(port)}
    )
    container_env = {
        e["name"]: localize([e["value"]], reports, {})[0] for e in job["master"]["env"]
    }
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")},
        **job["config"],  # the Job's envFrom: scenario knobs and thresholds
        **container_env,
        **SCENARIO_ENV,
        **thresholds,
        "HOME": str(tmp_path),
        "PATH": f"{LOADTEST_BIN}{os.pathsep}{os.environ['PATH']}",
    }
    procs = []
    try:
        options: dict[str, Any] = {
            "cwd": tmp_path,  # the paths are absolute, as in the image
            "env": env,
            "stdin": subprocess.DEVNULL,
            "text": True,
            "start_new_session": True,
        }
        master = subprocess.Popen(
            master_argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **options
        )
        procs.append(master)
        worker_log = (tmp_path / "worker.log").open("w")
        worker = subprocess.Popen(
            worker_argv, stdout=worker_log, stderr=subprocess.STDOUT, **options
        )
        procs.append(worker)
        output, _ = master.communicate(timeout=180)
        worker.wait(timeout=60)
        worker_log.close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    summary_path = reports / "summary.json"
    assert summary_path.exists(), output[-5000:]
    return master.returncode, output, json.loads(summary_path.read_text())


def test_the_job_fails_when_a_threshold_fails_and_passes_when_all_hold(
    job: dict[str, Any], fleet: Fleet, tmp_path: Path
) -> None:
    failing = tmp_path / "impossible"
    code, output, summary = run_job(job, fleet, failing, IMPOSSIBLE)
    assert code == 1, output[-5000:]
    failed = [c["what"] for c in summary["thresholds"]["checks"] if not c["ok"]]
    assert "failure ratio" in failed, summary["thresholds"]
    assert "threshold failure ratio" in output
    assert "FAILED" in output
    # The reports: on the volume, and in the log after the run.
    for name in ("report.html", "locust_stats.csv", "summary.json"):
        assert (failing / "reports" / name).is_file(), name
    assert f"----- {failing}/reports/summary.json" in output
    assert '"thresholds"' in output
    assert "----- locust exit status 1" in output

    passing = tmp_path / "relaxed"
    code, output, summary = run_job(job, fleet, passing, RELAXED)
    assert code == 0, output[-5000:]
    assert summary["thresholds"]["passed"] is True
    assert summary["counters"]["workers"] == 1
    assert "----- locust exit status 0" in output
