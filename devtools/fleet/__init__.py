"""The local fleet: N web replicas behind HAProxy on one port (launcher.py), its command
line (cli.py, `python -m devtools.fleet`) and HAProxy's config and runtime API (haproxy.py)."""

from .launcher import (
    DEFAULT_DATABASE_URL,
    DEFAULT_LOG_DIR,
    DEFAULT_RABBITMQ_URL,
    DEFAULT_SETTINGS,
    Fleet,
    FleetError,
    Replica,
)

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DEFAULT_LOG_DIR",
    "DEFAULT_RABBITMQ_URL",
    "DEFAULT_SETTINGS",
    "Fleet",
    "FleetError",
    "Replica",
]
