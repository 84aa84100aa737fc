"""The replica's operational endpoints: alive, ready to take sockets, Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import drain

READY_TIMEOUT_SECONDS = 2.0


@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Alive as long as the process answers."""
    return JsonResponse({"status": "ok"})


def _database_answers() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


@require_safe
async def readyz(request: HttpRequest) -> JsonResponse:
    """Ready while the database and the channel layer answer and we are not draining."""
    checks: dict[str, Any] = {"draining": drain.is_draining()}
    ok = not checks["draining"]
    try:
        await asyncio.wait_for(sync_to_async(_database_answers)(), READY_TIMEOUT_SECONDS)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"], ok = f"unavailable: {exc!r}", False
    layer = get_channel_layer()
    ping = getattr(layer, "ping", None)
    try:
        if ping is not None:  # the RabbitMQ layer: a round trip through the broker
            await asyncio.wait_for(ping(), READY_TIMEOUT_SECONDS)
        checks["channel_layer"] = "ok"
    except Exception as exc:
        checks["channel_layer"], ok = f"unavailable: {exc!r}", False
    return JsonResponse(
        {"status": "ok" if ok else "unavailable", **checks}, status=200 if ok else 503
    )


@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
