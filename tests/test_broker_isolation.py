"""No suite works in the broker's own vhost: each gets a throwaway one (tests/conftest.py,
tests/support/broker.py), so fixed queue and exchange names never meet another suite's
messages, nor a leftover of an earlier run."""

from __future__ import annotations

import os
import subprocess
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from django.conf import settings

from tests.support.broker import VHOST_PREFIX, throwaway_vhost

pytestmark = pytest.mark.rabbitmq_layer


def vhost_of(url: str) -> str:
    return unquote(urlsplit(url).path[1:])


def vhosts() -> set[str]:
    done = subprocess.run(
        ["rabbitmqctl", "-q", "list_vhosts", "name"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return {line.strip() for line in done.stdout.splitlines() if line.strip()} - {"name"}


def test_a_session_on_rabbitmq_runs_in_a_vhost_of_its_own() -> None:
    """`make test-rabbitmq` sets RABBITMQ_URL to the broker's `/`; the settings, the layer
    and the environment of every process the tests start say the session's vhost."""
    if not settings.RABBITMQ_URL:  # make test-sqlite: the in-memory layer, no broker
        assert "RABBITMQ_URL" not in os.environ or not os.environ["RABBITMQ_URL"]
        return
    vhost = vhost_of(settings.RABBITMQ_URL)
    assert vhost.startswith(VHOST_PREFIX), settings.RABBITMQ_URL
    layer: dict[str, Any] = settings.CHANNEL_LAYERS["default"]
    assert layer["CONFIG"]["url"] == settings.RABBITMQ_URL
    assert os.environ["RABBITMQ_URL"] == settings.RABBITMQ_URL


def test_the_module_vhost_is_not_the_brokers_own(rabbitmq_url: str) -> None:
    assert vhost_of(rabbitmq_url).startswith(VHOST_PREFIX)
    assert vhost_of(rabbitmq_url) in vhosts()


def test_a_throwaway_vhost_is_deleted_afterwards() -> None:
    with throwaway_vhost() as url:
        name = vhost_of(url)
        assert name in vhosts()
    assert name not in vhosts()
