"""What the scenarios measure: request names, failure kinds, the reporter, per-process counters.

Every measurement is a Locust request event (`request_type="WS"`, fired by a `Reporter`),
so the master adds them up across workers by itself. Counters that are not requests
(connections held, deliveries healed by a resync, the 1012 storm's first close and last
return) ride on each worker's periodic report to the master (`events.report_to_master` /
`worker_report`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

REQUEST_TYPE = "WS"

# Request names: what is measured, read naturally in Locust's tables.
MOVE_TO_OPPONENT = "ws move->opponent"  # move sent -> the opponent's socket has that state
FANOUT = "ws fanout"  # move sent -> one spectator's socket has that state
RELAY = "ws relay"  # {"data": X} sent -> another member's socket has {"payload": X}
CONNECT_TO_STATE = "ws connect->state"  # TCP+handshake start -> welcome and first state read
BACK_AFTER_1012 = "ws 1012->back"  # 1012 close received -> welcome+state (+seat) again
JOIN = "ws join"  # failures only: a seat was refused or never granted
MOVE = "ws move"  # failures only: the server refused or never confirmed a move
SERVER_ERROR = "ws error"  # failures only: an `error` frame nobody expected
SCENARIO = "ws scenario"  # failures only: the scenario broke off for another reason
DISCONNECT = "ws disconnect"  # failures only: a close that was neither ours nor a 1012

# The names the latency thresholds apply to.
LATENCY_NAMES = (MOVE_TO_OPPONENT, FANOUT)
# Names whose request count is a delivery (for deliveries/s).
DELIVERY_NAMES = (MOVE_TO_OPPONENT, FANOUT, RELAY)


class LostDelivery(Exception):
    """An expected broadcast never reached a connected member within the loss timeout."""


class MoveFailed(Exception):
    """The server answered a move with an `error`, or nobody ever saw the move."""


class JoinFailed(Exception):
    """A join was answered with an `error`, or not at all."""


class UnexpectedError(Exception):
    """An `error` frame the scenario did not provoke."""


class UnexpectedClose(Exception):
    """The server closed a socket with a code other than 1012 (or the TCP stream just ended)."""


class ConnectFailed(Exception):
    """No welcome + state within the connect timeout (refused, HTTP error, silence)."""


class NotBack(Exception):
    """After a 1012 the client did not get back within the reconnect deadline."""


class Reporter:
    """Fires Locust request events with real timings and a context for each measurement."""

    def __init__(self, environment: Any, **context: Any) -> None:
        self.environment = environment
        self.context = context

    def success(self, name: str, ms: float, length: int = 0, **context: Any) -> None:
        self._fire(name, ms, length, None, context)

    def failure(self, name: str, ms: float, exc: Exception, **context: Any) -> None:
        self._fire(name, ms, 0, exc, context)

    def _fire(
        self, name: str, ms: float, length: int, exc: Exception | None, context: dict[str, Any]
    ) -> None:
        self.environment.events.request.fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=ms,
            response_length=length,
            exception=exc,
            context={**self.context, **context},
        )


def is_loss(error: str) -> bool:
    """Whether a Locust error string (repr of the exception) counts as a lost delivery."""
    return error.startswith(LostDelivery.__name__)


def is_not_back(error: str) -> bool:
    """Whether a Locust error string is a drained socket that gave up coming back."""
    return error.startswith(NotBack.__name__)


@dataclass
class ProcessCounters:
    """This process's counters; the master sums the latest report of each worker."""

    open_now: int = 0
    open_peak: int = 0
    connects: int = 0
    # A delivery that arrived only through the `state` a reconnect brought (the receiver
    # was disconnected while it was broadcast): healed, neither latency nor loss.
    resynced: int = 0
    closes_1012: int = 0
    back_1012: int = 0
    # Closed on purpose (the user left, the run ended) while still coming back.
    abandoned_1012: int = 0
    first_1012_wall: float | None = None
    last_back_wall: float | None = None

    def opened(self) -> None:
        self.open_now += 1
        self.connects += 1
        self.open_peak = max(self.open_peak, self.open_now)

    def closed(self) -> None:
        self.open_now -= 1

    def got_1012(self) -> None:
        self.closes_1012 += 1
        if self.first_1012_wall is None:
            self.first_1012_wall = time.time()

    def came_back(self) -> None:
        self.back_1012 += 1
        self.last_back_wall = time.time()

    def snapshot(self) -> dict[str, Any]:
        return asdict(self)


COUNTERS = ProcessCounters()
