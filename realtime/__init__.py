"""The socket side: the GameRoom consumer and its message loop, the typed wire
messages, fan-out to rooms (and each replica's copy of them), presence
broadcasts, rate limits, drain, lifespan, heartbeat and metrics.

It calls the domain (`game/`) for every read and write and keeps no rules of its own.
"""
