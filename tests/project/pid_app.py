"""A WSGI app that answers with the serving process's id (for the gunicorn worker's tests)."""

from __future__ import annotations

import os


def application(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
