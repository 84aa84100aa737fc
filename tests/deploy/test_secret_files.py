"""Secrets as files (Kubernetes Secrets mounted in /etc/tictac/secrets): every setting X may
come as X_FILE (django-environ's FileAwareEnv), and the database password and the broker's
user may come apart from their URLs (DATABASE_PASSWORD, RABBITMQ_USERNAME,
RABBITMQ_PASSWORD), as the production overlay gives them (k8s/README.md, "Secrets")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from config.credentials import with_credentials

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json
from django.conf import settings
db = settings.DATABASES["default"]
print(json.dumps({
    "secret_key": settings.SECRET_KEY,
    "db": [db["HOST"], db["PORT"], db["NAME"], db["USER"], db["PASSWORD"]],
    "amqp": settings.RABBITMQ_URL,
    "layer": settings.CHANNEL_LAYERS["default"]["CONFIG"]["url"],
}))
"""


def probe(env: dict[str, str]) -> dict[str, object]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "RABBITMQ_", "SECRET_KEY"))
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**clean, "DJANGO_READ_ENV_FILE": "false", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_production_settings_read_the_operators_secrets_as_files(tmp_path: Path) -> None:
    files = {
        "SECRET_KEY": "s" * 60,
        # CloudNativePG's generated password; the Topology Operator's URL-safe base64 user.
        "DATABASE_PASSWORD": "p@ss/w:rd",
        "RABBITMQ_USERNAME": "Zm9v-YmFy_",
        "RABBITMQ_PASSWORD": "a+b/c=d",
    }
    for name, value in files.items():
        (tmp_path / name).write_text(value)
    result = probe(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "ALLOWED_HOSTS": "tictac.example.com",
            "DATABASE_URL": "postgres://tictac@tictac-db-pooler-rw:5432/tictac",
            "RABBITMQ_URL": "amqp://tictac-rabbitmq.tictac.svc:5672/tictac",
            **{f"{name}_FILE": str(tmp_path / name) for name in files},
        }
    )
    assert result["secret_key"] == files["SECRET_KEY"]
    assert result["db"] == ["tictac-db-pooler-rw", 5432, "tictac", "tictac", "p@ss/w:rd"]
    url = "amqp://Zm9v-YmFy_:a%2Bb%2Fc%3Dd@tictac-rabbitmq.tictac.svc:5672/tictac"
    assert result["amqp"] == url
    assert result["layer"] == url


def test_a_file_wins_over_the_variable_and_urls_with_credentials_still_work(
    tmp_path: Path,
) -> None:
    (tmp_path / "url").write_text("amqp://guest:guest@127.0.0.1:5672/%2f")
    result = probe(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.local",
            "RABBITMQ_URL": "amqp://ignored:ignored@elsewhere:5672/%2f",
            "RABBITMQ_URL_FILE": str(tmp_path / "url"),
            "DATABASE_URL": "postgres://u:pw@db:5432/app",
        }
    )
    assert result["amqp"] == "amqp://guest:guest@127.0.0.1:5672/%2f"
    assert result["db"] == ["db", 5432, "app", "u", "pw"]


@pytest.mark.parametrize(
    ("url", "username", "password", "expected"),
    [
        ("", "u", "p", ""),
        ("amqp://h:5672/v", "", "p", "amqp://h:5672/v"),
        ("amqp://old:old@h:5672/v", "new", "p w", "amqp://new:p%20w@h:5672/v"),
        ("amqps://h/v?heartbeat=30", "u", "", "amqps://u@h/v?heartbeat=30"),
        ("amqp://[::1]:5672/%2f", "u", "p", "amqp://u:p@[::1]:5672/%2f"),
    ],
)
def test_with_credentials(url: str, username: str, password: str, expected: str) -> None:
    assert with_credentials(url, username, password) == expected
