"""The local fleet: N web replicas behind HAProxy on one port (launcher.py), its command
line (cli.py, `python -m devtools.fleet`) and HAProxy's config and runtime API (haproxy.py)."""

from .launcher import Fleet, FleetError, Replica

__all__ = ["Fleet", "FleetError", "Replica"]
