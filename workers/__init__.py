"""The job fleet on RabbitMQ: topology, confirmed publishing, and the worker runtime.

Generic: it knows kinds, payloads and keys, not games. The game's handlers live
in game/jobs.py.
"""
