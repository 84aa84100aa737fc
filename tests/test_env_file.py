"""A developer's `.env` never reaches the tests: config/settings/test.py reads none, and
neither do the processes a test starts (it sets DJANGO_READ_ENV_FILE=false in the
environment they inherit).

Each case is a fresh interpreter loading the settings, with a `.env` full of bogus
values in a temporary directory (DJANGO_ENV_FILE points at it; the repository's own
`.env`, if any, is never touched) and none of those variables in its environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOGUS = {
    "RABBITMQ_URL": "amqp://bogus:bogus@bogus.invalid:5672/bogus",
    "DATABASE_URL": "postgres://bogus:bogus@bogus.invalid:5432/bogus",
    "LOG_LEVEL": "CRITICAL",
    "SECRET_KEY": "bogus-secret-from-dotenv",
}
PROBE = """
import json, django
django.setup()
from django.conf import settings
print(json.dumps({
    "RABBITMQ_URL": settings.RABBITMQ_URL,
    "DATABASE_URL": settings.DATABASES["default"].get("HOST") or "",
    "LOG_LEVEL": settings.LOG_LEVEL,
    "SECRET_KEY": settings.SECRET_KEY,
    "layer": settings.CHANNEL_LAYERS["default"]["BACKEND"],
}))
"""


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / ".env"
    path.write_text("".join(f"{name}={value}\n" for name, value in BOGUS.items()))
    return path


def load_settings(
    module: str, env_file: Path, cwd: Path, *, inherit_test_env: bool
) -> dict[str, Any]:
    """The settings `module` gives a new process whose environment lacks every BOGUS
    variable; with `inherit_test_env`, the test session's DJANGO_READ_ENV_FILE is kept
    (as in every process a test starts), else dropped too."""
    drop = {*BOGUS, "DJANGO_SETTINGS_MODULE", "DJANGO_ENV_FILE"}
    if not inherit_test_env:
        drop.add("DJANGO_READ_ENV_FILE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env |= {
        "DJANGO_SETTINGS_MODULE": module,
        "DJANGO_ENV_FILE": str(env_file),
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_the_session_tells_its_children_to_read_no_env_file() -> None:
    assert os.environ.get("DJANGO_READ_ENV_FILE") == "false"


def test_the_test_settings_read_no_env_file(env_file: Path, tmp_path: Path) -> None:
    found = load_settings("config.settings.test", env_file, tmp_path, inherit_test_env=False)
    assert found["RABBITMQ_URL"] == ""
    assert found["layer"] == "channels.layers.InMemoryChannelLayer"
    assert found["DATABASE_URL"] == ""  # SQLite: no host
    assert found["LOG_LEVEL"] == "INFO"
    assert found["SECRET_KEY"] != BOGUS["SECRET_KEY"]


def test_processes_the_tests_start_read_no_env_file_either(env_file: Path, tmp_path: Path) -> None:
    """A fleet's replicas run config.settings.local; in a test they inherit the switch."""
    found = load_settings("config.settings.local", env_file, tmp_path, inherit_test_env=True)
    assert found["RABBITMQ_URL"] == ""
    assert found["DATABASE_URL"] == ""
    assert found["LOG_LEVEL"] == "INFO"
    assert found["SECRET_KEY"] != BOGUS["SECRET_KEY"]


def test_outside_the_tests_the_env_file_is_read(env_file: Path, tmp_path: Path) -> None:
    """The control: the same file does reach `make run`'s settings, so the cases above
    prove the switch, not a file that was never found."""
    found = load_settings("config.settings.local", env_file, tmp_path, inherit_test_env=False)
    assert found["RABBITMQ_URL"] == BOGUS["RABBITMQ_URL"]
    assert found["layer"] == "layer.rabbitmq.RabbitMQChannelLayer"
    assert found["DATABASE_URL"] == "bogus.invalid"
    assert found["LOG_LEVEL"] == BOGUS["LOG_LEVEL"]
    assert found["SECRET_KEY"] == BOGUS["SECRET_KEY"]
