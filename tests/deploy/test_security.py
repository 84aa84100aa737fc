"""What production answers over HTTP: HEAD for uptime checkers, a strict Content-Security-
Policy, `check --deploy` without warnings, HTTPS enforced except for the probes."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from devtools.processes import ROOT

pytestmark = [pytest.mark.django_db]


@pytest.mark.parametrize("path", ["/", "/healthz", "/readyz", "/api/leaderboard"])
def test_head_answers_like_get_without_a_body(client: Client, path: str) -> None:
    got, head = client.get(path), client.head(path)
    assert head.status_code == got.status_code == 200
    assert head.content == b""


def test_the_page_carries_a_strict_content_security_policy(client: Client) -> None:
    policy = client.get("/").headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";") if d.strip())
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"  # no inline script, no eval
    assert directives["style-src"] == "'self'"
    assert directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in policy


def production_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "SECURE_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        SECRET_KEY=secrets.token_urlsafe(60),
        ALLOWED_HOSTS="tictac.example",
        DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3",
        RABBITMQ_URL="",
    )
    return env


def test_check_deploy_with_production_settings_finds_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=production_env(tmp_path),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


PROBE = """
from django.core.management import call_command
from django.test import Client
call_command("migrate", verbosity=0)
c = Client(HTTP_HOST="tictac.example")
api = "/api/leaderboard"
print(c.get(api).status_code, c.get(api, HTTP_X_FORWARDED_PROTO="https").status_code,
      c.get("/healthz").status_code, c.get("/metrics").status_code)
"""


def test_production_redirects_plain_http_but_never_the_probes(tmp_path: Path) -> None:
    env = production_env(tmp_path)
    probe = f"import django; django.setup()\n{PROBE}"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    api_http, api_https, healthz, metrics = result.stdout.split()
    assert api_http == "301"  # the ingress said nothing of TLS: to https
    assert api_https == "200"  # X-Forwarded-Proto: https from the ingress
    assert (healthz, metrics) == ("200", "200")  # kubelet and Prometheus speak plain HTTP
