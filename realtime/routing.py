from django.urls import re_path

from .consumers import GameRoom, Refuse

websocket_urlpatterns = [
    re_path(r"^ws/game/(?P<room_code>[A-Za-z0-9_-]{1,32})/?$", GameRoom.as_asgi()),
    re_path(r"", Refuse.as_asgi()),
]
