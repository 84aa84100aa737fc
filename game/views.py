"""HTTP: the page, health, readiness and the room API."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from .protocol import valid_room_code
from .selectors import room_state


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    return render(request, "game/index.html")


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Alive as long as the process answers."""
    return JsonResponse({"status": "ok"})


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Ready while the database answers."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        return JsonResponse({"status": "unavailable", "database": str(exc)}, status=503)
    return JsonResponse({"status": "ok"})


@require_GET
def room_detail(request: HttpRequest, code: str) -> JsonResponse:
    state = room_state(code) if valid_room_code(code) else None
    if state is None:
        return JsonResponse({"error": "not_found", "message": f"No room {code!r}."}, status=404)
    return JsonResponse(state)


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"error": "not_found", "message": "No such page."}, status=404)


def server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"error": "server_error", "message": "Something broke."}, status=500)
