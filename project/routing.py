"""WebSocket routes. Origins are checked and anonymous users refused by the consumer."""

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from events.consumers import LiveEventsConsumer

websocket_urlpatterns = [path("ws/live/", LiveEventsConsumer.as_asgi())]

websocket_application = AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
