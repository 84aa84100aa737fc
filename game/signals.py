"""What the game announces for the socket side to deliver. The job handlers (game/jobs.py)
change rooms and pair players outside any socket; realtime/ connects the receivers that
tell the rooms and players (realtime/apps.py), so the domain never imports the socket side.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.dispatch import Signal

# A room's row changed (the computer moved): send its `state` to every member.
# Arguments: row (rooms.RoomRow), presence (rooms.Presence).
room_changed = Signal()

# A seat was given up or released: tell the room who left (a `left` frame), then send
# its `state`. Arguments: applied (rooms.Applied), presence (rooms.Presence), reason
# ("leave" or "offline").
seat_left = Signal()

# A quick-match ticket was paired: tell its socket. Argument: pairing (matchmaking.Pairing).
matched = Signal()


async def announce(signal: Signal, **arguments: Any) -> None:
    """Send `signal` to its receivers and wait for them; their errors are the caller's.
    Without a receiver nobody would hear of it: that is a configuration error."""
    if not signal.has_listeners():
        raise ImproperlyConfigured(
            "no receiver for a game signal: add 'realtime' to INSTALLED_APPS"
        )
    await signal.asend(sender=None, **arguments)
