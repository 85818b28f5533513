"""The serving benchmark's reference: a bare Django REST framework view, no database, no authentication.

``DJANGO_SETTINGS_MODULE=bench.reference_app gunicorn bench.reference_app:application -w 2`` serves
``GET /ref`` → ``{"ok": true}``. It is what the predict path is compared against: the same
framework and server with nothing of Plasticity's in the request (no token, no route, no model).
"""

from __future__ import annotations

import os

from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False, SECRET_KEY="reference-app-" + "x" * 50, ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__, INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth",
                                               "rest_framework"],
        MIDDLEWARE=[], DATABASES={},
        REST_FRAMEWORK={"DEFAULT_AUTHENTICATION_CLASSES": [], "DEFAULT_PERMISSION_CLASSES": [],
                        "UNAUTHENTICATED_USER": None, "DEFAULT_RENDERER_CLASSES": [
                            "rest_framework.renderers.JSONRenderer"]},
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.reference_app")

import django  # noqa: E402

django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.urls import path  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.views import APIView  # noqa: E402


class ReferenceView(APIView):
    def get(self, request):
        return Response({"ok": True})


urlpatterns = [path("ref", ReferenceView.as_view())]
application = get_wsgi_application()
