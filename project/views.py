"""Top-level pages: the overview (the control panel's home, see project/panel) and a liveness probe."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from project.panel.views import overview

__all__ = ["healthz", "overview"]


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness and database reachability; answers 503 while the database is down."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        return JsonResponse({"status": "unavailable", "database": str(exc)[:200]}, status=503)
    return JsonResponse({"status": "ok"})
