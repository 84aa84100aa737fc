"""The machine's RabbitMQ, for tests that take it away and bring it back."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

RABBITMQ_URL = os.environ.get("RABBITMQ_TEST_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


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


@contextmanager
def broker_stopped() -> Iterator[None]:
    """Stop the RabbitMQ application for the body; always start it again."""
    rabbitmqctl("stop_app")
    try:
        yield
    finally:
        rabbitmqctl("start_app")
        broker_ready()
