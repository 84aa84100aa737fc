"""The machine's RabbitMQ in tests: throwaway vhosts, and taking the broker away.

- `RABBITMQ_URL`: the broker the tests use (`RABBITMQ_TEST_URL`, default the local
  one's `/` vhost). No test talks to that vhost itself: every suite gets a vhost of
  its own from `throwaway_vhost()` (tests/conftest.py's `rabbitmq_url` fixture per
  module; the session's settings under `make test-rabbitmq`), because the job queues
  (`tictac.jobs...`) and the layer's group exchange have fixed names, and two suites
  (or a leftover of a killed run) in one vhost would take each other's messages.
- `broker_stopped()`: stop the RabbitMQ application for a block, always start it again.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

RABBITMQ_URL = os.environ.get("RABBITMQ_TEST_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
VHOST_PREFIX = "tictac_test_"


def rabbitmqctl(*args: str, within: float = 0.0) -> None:
    """Run `rabbitmqctl`; with `within`, retry that long while it fails (the broker may
    be down: another suite restarting it)."""
    deadline = time.monotonic() + within
    while True:
        result = subprocess.run(["rabbitmqctl", *args], capture_output=True, timeout=120)
        if result.returncode == 0:
            return
        if time.monotonic() >= deadline:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {result.stderr.decode()[-500:]}")
        time.sleep(0.5)


def with_vhost(url: str, vhost: str) -> str:
    """`url` pointing at `vhost` instead of its own."""
    return urlunsplit(urlsplit(url)._replace(path="/" + quote(vhost, safe="")))


@contextlib.contextmanager
def throwaway_vhost(base_url: str = RABBITMQ_URL) -> Iterator[str]:
    """A fresh vhost `tictac_test_<hex>` on `base_url`'s broker, its user allowed in: the
    URL of it. Deleted afterwards (which closes any connection still in it).

    Without `rabbitmqctl` on this machine (a remote broker) `base_url` is used as it
    is, and the suites rely on purging the queues they use.
    """
    if shutil.which("rabbitmqctl") is None:
        yield base_url
        return
    name = f"{VHOST_PREFIX}{secrets.token_hex(4)}"
    user = urlsplit(base_url).username or "guest"
    rabbitmqctl("add_vhost", name, within=60)
    try:
        rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*", within=60)
        yield with_vhost(base_url, name)
    finally:
        with contextlib.suppress(OSError, subprocess.SubprocessError, RuntimeError):
            rabbitmqctl("delete_vhost", name, within=60)


def broker_ready(timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run(
            ["rabbitmq-diagnostics", "-q", "check_port_connectivity"],
            capture_output=True,
            timeout=60,
        )
        if result.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"RabbitMQ not back: {result.stderr.decode()[-500:]}")
        time.sleep(0.5)


@contextlib.contextmanager
def broker_stopped() -> Iterator[None]:
    """Stop the RabbitMQ application for the body; always start it again.

    Every vhost (the suites' throwaway ones included) survives: stop_app keeps the
    broker's definitions.
    """
    rabbitmqctl("stop_app")
    try:
        yield
    finally:
        rabbitmqctl("start_app", within=60)
        broker_ready()
