"""Template context every page needs: where the live WebSocket is served."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def live(request: HttpRequest) -> dict:
    """``ws_port``: the WebSocket server's port when it is not the page's own (``manage.py serve``), else ""."""
    port = getattr(settings, "PLASTICITY_WS_PORT", 0)
    return {"ws_port": port or ""}
