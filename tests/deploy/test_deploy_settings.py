"""deploy/ takes its knobs from the Django settings, and only config/settings/ reads them
from the environment.

In-process tests override the settings and read what gunicorn's config file, the worker
class and `python -m deploy.server` make of them; one subprocess per case starts from
the environment alone (as gunicorn and `make run` do, no DJANGO_SETTINGS_MODULE) and
shows the same variable names and defaults reach them.
"""

from __future__ import annotations

import ast
import json
import math
import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import deploy.server
from deploy.uvicorn_worker import GameUvicornWorker, GameWebSocketProtocol, uvicorn_options

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
GUNICORN_CONF = DEPLOY / "gunicorn.conf.py"

# Every knob deploy/ uses, with the default it had when deploy/ read the environment itself.
DEFAULTS = {
    "HOST": "127.0.0.1",
    "PORT": 8000,
    "LOG_LEVEL": "INFO",
    "WEB_CONCURRENCY": 1,
    "MAX_FRAME_BYTES": 16384,
    "WS_PING_INTERVAL_SECONDS": 20.0,
    "WS_PING_TIMEOUT_SECONDS": 20.0,
    "GRACEFUL_SHUTDOWN_SECONDS": 25,
    "DRAIN_READINESS_DELAY_SECONDS": 3.0,
    "DRAIN_WINDOW_SECONDS": 10.0,
}
CHANGED = {
    "HOST": "0.0.0.0",
    "PORT": 8123,
    "LOG_LEVEL": "WARNING",
    "WEB_CONCURRENCY": 3,
    "MAX_FRAME_BYTES": 999,
    "WS_PING_INTERVAL_SECONDS": 0.5,
    "WS_PING_TIMEOUT_SECONDS": 3.0,
    "GRACEFUL_SHUTDOWN_SECONDS": 7,
    "DRAIN_READINESS_DELAY_SECONDS": 0.0,
    "DRAIN_WINDOW_SECONDS": 2.5,
}


def expected(knobs: dict[str, Any]) -> dict[str, Any]:
    """What deploy/ should make of these settings."""
    return {
        "bind": f"0.0.0.0:{knobs['PORT']}",
        "workers": knobs["WEB_CONCURRENCY"],
        "graceful_timeout": math.ceil(
            knobs["DRAIN_READINESS_DELAY_SECONDS"]
            + knobs["DRAIN_WINDOW_SECONDS"]
            + knobs["GRACEFUL_SHUTDOWN_SECONDS"]
            + 5
        ),
        "loglevel": knobs["LOG_LEVEL"].lower(),
        "ws_max_size": knobs["MAX_FRAME_BYTES"],
        "ws_ping_interval": knobs["WS_PING_INTERVAL_SECONDS"],
        "ws_ping_timeout": knobs["WS_PING_TIMEOUT_SECONDS"],
        "timeout_graceful_shutdown": knobs["GRACEFUL_SHUTDOWN_SECONDS"],
        "host": knobs["HOST"],
        "port": knobs["PORT"],
        "log_level": knobs["LOG_LEVEL"].lower(),
    }


class _Captured(Exception):
    pass


def served_config(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The uvicorn.Config `python -m deploy.server` would serve, without serving it."""
    seen: list[Any] = []

    class FakeServer:
        def __init__(self, config: Any) -> None:
            seen.append(config)

        def run(self) -> None:
            raise _Captured

    monkeypatch.setattr(deploy.server, "DrainingServer", FakeServer)
    with pytest.raises(_Captured):
        deploy.server.main()
    (config,) = seen
    return config


# --- in process: the settings decide ---------------------------------------------------


def test_the_worker_gunicorn_and_server_follow_the_settings(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in CHANGED.items():
        setattr(settings, name, value)
    want = expected(CHANGED)

    options = uvicorn_options()
    assert {k: options[k] for k in ("ws_max_size", "ws_ping_interval", "ws_ping_timeout")} == {
        k: want[k] for k in ("ws_max_size", "ws_ping_interval", "ws_ping_timeout")
    }
    assert options["timeout_graceful_shutdown"] == want["timeout_graceful_shutdown"]
    assert options["ws"] is GameWebSocketProtocol
    assert options["proxy_headers"] is True

    conf = runpy.run_path(str(GUNICORN_CONF))
    assert {k: conf[k] for k in ("bind", "workers", "graceful_timeout", "loglevel")} == {
        k: want[k] for k in ("bind", "workers", "graceful_timeout", "loglevel")
    }
    assert conf["worker_class"] == "deploy.uvicorn_worker.GameUvicornWorker"

    # deploy.server: HOST, PORT, LOG_LEVEL from the settings; the worker class's options
    # (read when the class was defined, from this process's settings).
    config = served_config(monkeypatch)
    assert (config.host, config.port, config.log_level) == (
        want["host"],
        want["port"],
        want["log_level"],
    )
    assert config.ws_max_size == GameUvicornWorker.CONFIG_KWARGS["ws_max_size"]
    assert config.ws_ping_interval == GameUvicornWorker.CONFIG_KWARGS["ws_ping_interval"]


def test_the_worker_class_options_are_the_settings_of_its_process() -> None:
    assert uvicorn_options() == GameUvicornWorker.CONFIG_KWARGS


def test_deploy_reads_no_environment_variable_itself() -> None:
    """Only config/settings/ reads the environment; deploy/ at most names the settings
    module it loads (DJANGO_SETTINGS_MODULE, with config.asgi's default)."""
    allowed = "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings.local')"
    for path in sorted(DEPLOY.glob("*.py")):
        tree = ast.parse(path.read_text())
        reads = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and ast.unparse(node) in ("os.environ", "os.environb", "os.getenv")
        ]
        calls = [
            ast.unparse(node)
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and ast.unparse(node.func).startswith("os.")
        ]
        assert len(reads) == calls.count(allowed), (path.name, calls)


# --- from the environment, in a fresh process -------------------------------------------

PROBE = """
import json, os, runpy, sys
import deploy.server as server
from deploy.uvicorn_worker import GameUvicornWorker

seen = []
class FakeServer:
    def __init__(self, config):
        seen.append(config)
    def run(self):
        pass
server.DrainingServer = FakeServer
server.main()
(config,) = seen
conf = runpy.run_path("deploy/gunicorn.conf.py")
kwargs = GameUvicornWorker.CONFIG_KWARGS
print(json.dumps({
    "settings_module": os.environ["DJANGO_SETTINGS_MODULE"],
    "bind": conf["bind"],
    "workers": conf["workers"],
    "graceful_timeout": conf["graceful_timeout"],
    "loglevel": conf["loglevel"],
    "ws_max_size": kwargs["ws_max_size"],
    "ws_ping_interval": kwargs["ws_ping_interval"],
    "ws_ping_timeout": kwargs["ws_ping_timeout"],
    "timeout_graceful_shutdown": kwargs["timeout_graceful_shutdown"],
    "host": config.host,
    "port": config.port,
    "log_level": config.log_level,
}))
"""


def probe(env: dict[str, str]) -> dict[str, Any]:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in DEFAULTS and k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_without_the_variables_deploy_keeps_its_defaults() -> None:
    # No .env gets in either: the probe inherits the test session's DJANGO_READ_ENV_FILE.
    found = probe({})
    assert found.pop("settings_module") == "config.settings.local"  # config.asgi's default
    assert found == expected(DEFAULTS)


def test_the_same_variables_reach_deploy_through_the_settings() -> None:
    found = probe({name: str(value) for name, value in CHANGED.items()})
    assert found.pop("settings_module") == "config.settings.local"
    assert found == expected(CHANGED)
