"""ASGI entry point: HTTP through Django, WebSockets through Channels (project/routing.py)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from project.routing import websocket_application  # noqa: E402  (needs the app registry loaded)

application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": websocket_application})
