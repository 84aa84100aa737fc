from django.urls import path

from game import views

urlpatterns = [
    path("", views.index, name="index"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics, name="metrics"),
    path("api/rooms/<str:code>", views.room_detail, name="room-detail"),
    path("api/leaderboard", views.leaderboard_list, name="leaderboard"),
]

handler404 = "game.views.not_found"
handler500 = "game.views.server_error"
