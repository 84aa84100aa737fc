"""The fan-out contenders (`python -m bench.fanout`): what each runs, which ladders it climbs.

A contender is an app ("game": the real one, as production runs it; otherwise an ASGI
path in bench/apps.py) on a number of replicas, with the environment it needs (the
tutorial relays: which channel layer). The game climbs two ladders on the same servers
(moves, then relay), each reported as its own row; `--only` picks contenders by name and
ladders by row (`selected`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

MOVES_ROW = "game moves (PostgreSQL + our layer)"
RELAY_ROW = "game relay {data} (our layer)"


@dataclass
class Contender:
    name: str
    app: str  # "game" or an ASGI path
    replicas: int
    # "moves", "data" (game relay), "message" (tutorial relay), or several ladders
    # joined by "+", climbed one after the other on the same servers and rooms
    mode: str
    env: dict[str, str] = field(default_factory=dict)
    rows: dict[str, str] = field(default_factory=dict)  # result row per ladder (default: name)

    @property
    def ladders(self) -> list[str]:
        return self.mode.split("+")

    def row(self, mode: str) -> str:
        return self.rows.get(mode, self.name)


CONTENDERS = [
    Contender(
        "game, 2 replicas (PostgreSQL + our layer): both paths, one after the other",
        "game",
        2,
        "moves+data",
        rows={"moves": MOVES_ROW, "data": RELAY_ROW},
    ),
    Contender(
        "minimal relay, our layer + lean consumer loop",
        "bench.apps:relay_application",
        2,
        "message",
        {"BENCH_LAYER": "rabbitmq", "BENCH_CONSUMER": "lean"},
    ),
    Contender(
        "tutorial relay, our RabbitMQ layer",
        "bench.apps:relay_application",
        2,
        "message",
        {"BENCH_LAYER": "rabbitmq"},
    ),
    Contender(
        "tutorial relay, channels_redis core",
        "bench.apps:relay_application",
        2,
        "message",
        {"BENCH_LAYER": "redis"},
    ),
    Contender(
        "tutorial relay, channels_redis PubSub",
        "bench.apps:relay_application",
        2,
        "message",
        {"BENCH_LAYER": "redis-pubsub"},
    ),
    Contender(
        "tutorial relay, in-memory layer (1 process)",
        "bench.apps:relay_application",
        1,
        "message",
        {"BENCH_LAYER": "memory"},
    ),
    Contender(
        "raw ASGI broadcast, no Channels (1 process)", "bench.apps:raw_application", 1, "message"
    ),
]


def selected(contender: Contender, wanted: list[str]) -> list[str]:
    """The contender's ladders `--only` asks for: all if its name matches, else those whose
    row does."""
    if not wanted or any(w in contender.name for w in wanted):
        return contender.ladders
    return [m for m in contender.ladders if any(w in contender.row(m) for w in wanted)]
