"""ASGI entry point: HTTP through Django, WebSockets through Channels (project/routing.py).

``manage.py serve`` runs daphne beside gunicorn for WebSockets only: there
``PLASTICITY_ASGI_HTTP=health`` leaves its HTTP side the health check (``/healthz``) and answers
every other path 404 in the API's error shape, so pages, the API and predict are served by the
multi-process WSGI tier alone. ``serve --single`` and a plain ``daphne project.asgi:application``
(``PLASTICITY_ASGI_HTTP`` unset or ``all``) serve everything.
"""

import json
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from project.api.errors import error_body  # noqa: E402
from project.routing import websocket_application  # noqa: E402  (needs the app registry loaded)

HTTP_MODES = ("all", "health")
HEALTH_PATHS = ("/healthz",)


def http_mode() -> str:
    mode = os.environ.get("PLASTICITY_ASGI_HTTP", "all").strip().lower() or "all"
    if mode not in HTTP_MODES:
        raise RuntimeError(f"PLASTICITY_ASGI_HTTP must be one of {', '.join(HTTP_MODES)}, not {mode!r}")
    return mode


async def health_only(scope, receive, send) -> None:
    """The WebSocket server's HTTP side under ``serve``: the health check, and 404 for the rest."""
    if scope.get("path") in HEALTH_PATHS:
        await django_asgi_app(scope, receive, send)
        return
    body = json.dumps(error_body("not_found", "this port serves WebSockets (/ws/) and /healthz; pages, the API "
                                              "and predict are on the HTTP port")).encode()
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


application = ProtocolTypeRouter({"http": django_asgi_app if http_mode() == "all" else health_only,
                                  "websocket": websocket_application})
