from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    """The socket side. It delivers what the game announces (game/signals.py)."""

    name = "realtime"

    def ready(self) -> None:
        from game import signals

        from . import groups

        signals.room_changed.connect(groups.on_room_changed, dispatch_uid="realtime.room")
        signals.seat_left.connect(groups.on_seat_left, dispatch_uid="realtime.left")
        signals.matched.connect(groups.on_matched, dispatch_uid="realtime.matched")
