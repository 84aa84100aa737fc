"""HTTP: the page and the read API (rooms, leaderboard); the replica's health,
readiness and metrics endpoints are realtime/health.py."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from .rooms import valid_room_code
from .selectors import leaderboard, room_state


@require_safe
def index(request: HttpRequest) -> HttpResponse:
    return render(request, "game/index.html")


@require_safe
def room_detail(request: HttpRequest, code: str) -> JsonResponse:
    state = room_state(code) if valid_room_code(code) else None
    if state is None:
        return JsonResponse({"error": "not_found", "message": f"No room {code!r}."}, status=404)
    return JsonResponse(state)


@require_safe
def leaderboard_list(request: HttpRequest) -> JsonResponse:
    try:
        limit = min(100, max(1, int(request.GET.get("limit", "20"))))
    except ValueError:
        return JsonResponse(
            {"error": "bad_request", "message": "limit must be an integer."}, status=400
        )
    return JsonResponse({"leaderboard": leaderboard(limit=limit)})


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"error": "not_found", "message": "No such page."}, status=404)


def server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"error": "server_error", "message": "Something broke."}, status=500)
