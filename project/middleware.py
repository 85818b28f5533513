"""Answer 503 (with ``Retry-After``) while the database is unreachable, for pages and the API.

A restarting or unreachable database raises ``OperationalError`` (connection refused, server
shutting down, connection lost) or ``InterfaceError`` (a connection closed underneath us).
Left alone, those become a 500 with a stack trace in the log, which tells a browser or an API
client nothing useful. This middleware turns them into a short 503 that asks the client to
come back in a few seconds: the API gets the usual error body, a page gets a small HTML page
that reloads itself.

No process restart is needed afterwards: Django checks a connection's health before reusing
it (``CONN_HEALTH_CHECKS``) and drops one that saw an error when the request ends, so the
first request after the database is back opens a fresh connection.

Only the connection-level errors are answered this way; ``IntegrityError``,
``ProgrammingError`` and the rest are bugs or conflicts and keep their usual handling.
"""

from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.deprecation import MiddlewareMixin
from django.utils.html import escape

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 5
CODE = "database_unavailable"
MESSAGE = "The database is unavailable at the moment; retry in a few seconds."

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{retry}">
<title>Plasticity: temporarily unavailable</title></head>
<body><h1>Temporarily unavailable</h1><p>{message}</p>
<p>This page reloads itself in {retry} seconds.</p></body></html>
"""


def wants_json(request: HttpRequest) -> bool:
    """API paths, and clients that ask for JSON rather than HTML, get the JSON error body."""
    if request.path.startswith("/api/"):
        return True
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def database_unavailable_response(request: HttpRequest) -> HttpResponse:
    if wants_json(request):
        # The API's one error shape (project/api/errors.py): {"error": {"code", "message", "details"}}.
        response: HttpResponse = JsonResponse(
            {"error": {"code": CODE, "message": MESSAGE, "details": {"retry_after": RETRY_AFTER_S}}}, status=503
        )
    else:
        response = HttpResponse(_PAGE.format(retry=RETRY_AFTER_S, message=escape(MESSAGE)), status=503,
                                content_type="text/html; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER_S)
    response["Cache-Control"] = "no-store"
    return response


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """Turns a view's ``OperationalError``/``InterfaceError`` into a 503 with ``Retry-After``.

    DRF re-raises exceptions its handler does not know, so API views reach here too.
    """

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        logger.warning("database unavailable during %s %s: %s", request.method, request.path,
                       str(exception).strip().splitlines()[0] if str(exception).strip() else type(exception).__name__)
        return database_unavailable_response(request)
