"""Limits that protect the fleet, not only one socket (docs/protocol.md, "Presence and
limits"): sockets per client address on this replica, addresses cooling down after their
socket was closed for flooding, and a fan-out budget per room (relay and chat deliveries
per second, whoever sends them). Members per room are counted at connect, from the
presence the connect statement returns (realtime/consumers.py).

The client address is the ASGI scope's: behind a load balancer uvicorn takes it from
`X-Forwarded-For` only when the peer is in `FORWARDED_ALLOW_IPS` (the settings).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from django.conf import settings

COOLING_MAX = 10_000  # addresses remembered at once; expired ones go first


def client_address(scope: dict[str, Any]) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


class Addresses:
    """This replica's sockets per client address, and the addresses cooling down."""

    def __init__(self) -> None:
        self.sockets: Counter[str] = Counter()
        self.cooling: dict[str, float] = {}  # address -> monotonic time it may come back

    def admit(self, address: str | None, now: float | None = None) -> str | None:
        """Count a new socket of `address`, or say why not: `cooling_down`, `too_many_sockets`."""
        if address is None:
            return None
        now = time.monotonic() if now is None else now
        until = self.cooling.get(address)
        if until is not None:
            if now < until:
                return "cooling_down"
            del self.cooling[address]
        if self.sockets[address] >= settings.MAX_SOCKETS_PER_ADDRESS:
            return "too_many_sockets"
        self.sockets[address] += 1
        return None

    def release(self, address: str | None) -> None:
        if address is not None:
            self.sockets[address] -= 1
            if self.sockets[address] <= 0:
                del self.sockets[address]

    def cool_down(self, address: str | None, now: float | None = None) -> None:
        """`address` flooded: no new socket from it for FLOOD_COOLDOWN_SECONDS."""
        if address is None or settings.FLOOD_COOLDOWN_SECONDS <= 0:
            return
        now = time.monotonic() if now is None else now
        if len(self.cooling) >= COOLING_MAX:
            self.cooling = {a: t for a, t in self.cooling.items() if t > now}
            while len(self.cooling) >= COOLING_MAX:  # all still cooling: the oldest go
                del self.cooling[next(iter(self.cooling))]
        self.cooling[address] = now + settings.FLOOD_COOLDOWN_SECONDS


class RoomBudgets:
    """Relay and chat deliveries per second per room on this replica: a token bucket each,
    refilled at ROOM_FANOUT_PER_SECOND and holding at most one second of it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}  # room -> (tokens, when)

    def spend(self, room: str, deliveries: int, now: float | None = None) -> bool:
        rate = float(settings.ROOM_FANOUT_PER_SECOND)
        now = self.clock() if now is None else now
        tokens, when = self.buckets.get(room, (rate, now))
        tokens = min(rate, tokens + (now - when) * rate)
        if tokens < deliveries:
            self.buckets[room] = (tokens, now)
            return False
        self.buckets[room] = (tokens - deliveries, now)
        return True

    def forget(self, room: str) -> None:
        self.buckets.pop(room, None)


addresses = Addresses()
budgets = RoomBudgets()
