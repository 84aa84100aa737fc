from django.urls import re_path

from game.rooms import ROOM_CODE

from .consumers import GameRoom, Refuse

websocket_urlpatterns = [
    re_path(rf"^ws/game/(?P<room_code>{ROOM_CODE})/?$", GameRoom.as_asgi()),
    re_path(r"", Refuse.as_asgi()),
]
