"""Middleware: request bodies above their limit refused before they are read (413), and 503 (with
``Retry-After``) while the database is unreachable, for pages and the API.

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

import io
import logging
import re

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.deprecation import MiddlewareMixin
from django.utils.html import escape

from models_registry.api.parsers import TOO_LARGE_ADVICE
from models_registry.serving.conf import serving_setting
from project.api.errors import error_body, size_text
from project.api.uploads import body_limit as upload_body_limit

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
        response: HttpResponse = JsonResponse(error_body(CODE, MESSAGE, {"retry_after": RETRY_AFTER_S}), status=503)
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


# ------------------------------------------------------------------------------ request bodies

#: The predict endpoint (group 1: the task's slug); the fast lane (project.fastlane) matches the same.
#: Exactly the route Django resolves (``tasks/<str:slug>/predict`` under ``api/``, no trailing slash;
#: ``\Z``, not ``$``, which would also take a trailing newline): the lane must not answer a path
#: that Django answers 404.
PREDICT_PATH = re.compile(r"^/api/tasks/([^/]+)/predict\Z")
_UPLOAD_PATHS = ("/api/tasks", "/api/tasks/")
#: Rows appended to a task's dataset, through the API and from the panel's task page.
_ROWS_PATH = re.compile(r"^(?:/api)?/tasks/[^/]+/rows/?$")
#: The panel's new-task form: a declared body above the limit is handed on unread, marked with its size
#: in ``request.META[BODY_TOO_LARGE]``, so that the view says so in the form, next to the file input.
FORM_UPLOAD_PATHS = ("/tasks/new/",)
BODY_TOO_LARGE = "plasticity.body_too_large"


def request_body_limit(path: str) -> int:
    """The most bytes a request body to ``path`` may carry: dataset uploads (a new task's, or rows
    appended to one), predict batches, and a small allowance (``DATA_UPLOAD_MAX_MEMORY_SIZE``) for
    everything else."""
    if path in _UPLOAD_PATHS or path in FORM_UPLOAD_PATHS or _ROWS_PATH.match(path):
        return upload_body_limit()
    if PREDICT_PATH.match(path):
        return serving_setting("PLASTICITY_PREDICT_MAX_BYTES")
    return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 2_621_440)


def body_too_large_response(request: HttpRequest, limit: int, size: int | None) -> HttpResponse:
    got = f"is {size_text(size)}" if size is not None else "is larger than allowed"
    message = f"The request body {got}; the limit for {request.path} is {size_text(limit)}."
    if PREDICT_PATH.match(request.path):
        message += f" {TOO_LARGE_ADVICE[0].upper()}{TOO_LARGE_ADVICE[1:]}."
    if wants_json(request):
        response: HttpResponse = JsonResponse(error_body("payload_too_large", message, {"limit_bytes": limit}),
                                               status=413)
    else:
        response = HttpResponse(f"<!doctype html><title>Too large</title><h1>Too large</h1><p>{escape(message)}</p>",
                                status=413, content_type="text/html; charset=utf-8")
    response["Connection"] = "close"  # the unread body must not be taken for the next request
    return response


class RequestBodyLimitMiddleware:
    """Refuses a request body above its path's limit before anything reads it.

    First in the chain, before sessions, authentication and throttles: a declared
    ``Content-Length`` above the limit is answered 413 at once, whoever sends it (an anonymous
    client included), and nothing of the body is read. A chunked body (no length) is read from
    the server's stream up to the limit and no further — 413 once it passes, else it is handed
    on as an ordinary body of known length — so memory stays bounded either way. (Under the
    WSGI tier bodies are streamed; an ASGI server such as ``serve --single``'s daphne reads the
    body before the application sees it.) The one exception, ``FORM_UPLOAD_PATHS``, is handed on
    unread and marked, so that its form shows the refusal next to the file input.
    """

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = request_body_limit(request.path)
        declared = request.META.get("CONTENT_LENGTH")
        if declared:
            try:
                size = int(declared)
            except ValueError:
                size = 0
            if size > limit and request.path in FORM_UPLOAD_PATHS:
                request.META[BODY_TOO_LARGE] = size  # its view refuses it, in the form, without reading it
            elif size > limit:
                return body_too_large_response(request, limit, size)
        elif "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            raw = request.META.get("wsgi.input")
            if raw is not None:
                body = _read_at_most(raw, limit + 1)
                size = body.tell()
                if size > limit:
                    return body_too_large_response(request, limit, None)
                body.seek(0)
                request._stream = LimitedStream(body, size)  # type: ignore[assignment]  # WSGIRequest's stream
                request.META["CONTENT_LENGTH"] = str(size)
        return self.get_response(request)


def _read_at_most(stream, n: int, chunk: int = 64 * 1024) -> io.BytesIO:
    """At most ``n`` bytes of ``stream``, in one buffer (no second copy)."""
    buffer = io.BytesIO()
    while buffer.tell() < n:
        part = stream.read(min(chunk, n - buffer.tell()))
        if not part:
            break
        buffer.write(part)
    return buffer
