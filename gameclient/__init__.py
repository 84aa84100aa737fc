"""The game's protocol client, for everything here that talks to a replica as a player would.

- `gameclient.codec`: the wire of docs/protocol.md in the standard library only: frame
  types, client messages, strict decoding, and the rules every client follows (the newest
  state wins, which errors mean "sync", which closes to come back from). Locust's gevent
  sockets (loadtest/) use it as they are; so does everything below.
- `gameclient.connection`: one asyncio connection (`websockets`) that reads every frame in
  the background and waits for what a caller asks for: the tests' client.
- `gameclient.member`: a room member that comes back by itself after any close (1012
  drain, a dead replica, a refused connection); `gameclient.player`: its kinds, a
  spectator and a player who rejoins its seat with its token and plays a script (the
  fleet tests' players and spectators).

This package imports nothing from the server (`game`, `realtime`, Django), so it runs
wherever a client runs.
"""
