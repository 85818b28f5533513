"""Top-level pages: the overview (the control panel's home, see project/panel) and a liveness probe."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views import defaults
from django.views.decorators.http import require_GET

from project.api.errors import error_body
from project.middleware import wants_json
from project.panel.views import overview

__all__ = ["healthz", "overview", "server_error"]

#: The API's one error shape for an unexpected failure (a bug): nothing of the exception is shown.
SERVER_ERROR_CODE = "server_error"
SERVER_ERROR_MESSAGE = "The server failed to answer this request; the failure is logged. Retry later, or report it."


def server_error(request: HttpRequest):
    """``handler500``: the API's JSON error shape for API paths and JSON clients, the panel's 500
    page otherwise. Reads nothing from the database (which may be what failed) and reverses no URL."""
    if wants_json(request):
        return JsonResponse(error_body(SERVER_ERROR_CODE, SERVER_ERROR_MESSAGE), status=500)
    return defaults.server_error(request)


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness and database reachability; answers 503 while the database is down."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        return JsonResponse({"status": "unavailable", "database": str(exc)[:200]}, status=503)
    return JsonResponse({"status": "ok"})
