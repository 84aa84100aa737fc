from django.urls import path

from game import views
from realtime import health

urlpatterns = [
    path("", views.index, name="index"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("api/rooms/<str:code>", views.room_detail, name="room-detail"),
    path("api/leaderboard", views.leaderboard_list, name="leaderboard"),
]

handler404 = "game.views.not_found"
handler500 = "game.views.server_error"
