"""DatabaseUnavailableMiddleware: a lost database connection becomes a 503 with Retry-After, as JSON
for the API and as a small self-reloading page for the control panel; other errors keep theirs.

The views below stand in for any page or API view; this module is also their URLconf.
"""

from __future__ import annotations

import pytest
from django.db import IntegrityError, InterfaceError, OperationalError
from django.http import HttpResponse
from django.test import Client
from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.views import APIView


def _page(request):
    raise OperationalError('connection to server at "127.0.0.1", port 5432 failed: Connection refused')


def _conflict(request):
    raise IntegrityError("duplicate key value violates unique constraint")


def _fine(request):
    return HttpResponse("ok")


class _ApiView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get(self, request):
        raise InterfaceError("connection already closed")


urlpatterns = [
    path("page", _page), path("conflict", _conflict), path("fine", _fine), path("api/thing", _ApiView.as_view()),
]

pytestmark = pytest.mark.urls(__name__)


@pytest.fixture
def client() -> Client:
    return Client(raise_request_exception=False)


def test_a_page_gets_a_503_page_that_reloads_itself(client):
    response = client.get("/page", HTTP_ACCEPT="text/html")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response["Content-Type"].startswith("text/html")
    body = response.content.decode()
    assert "Temporarily unavailable" in body and 'http-equiv="refresh"' in body
    assert "5432" not in body, "no connection details leak to the page"


def test_a_json_client_gets_the_api_error_shape(client):
    response = client.get("/page", HTTP_ACCEPT="application/json")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"


def test_an_api_view_gets_a_503_through_drf(client):
    response = client.get("/api/thing")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    body = response.json()["error"]
    assert body["code"] == "database_unavailable" and body["details"] == {"retry_after": 5}


def test_other_database_errors_are_not_hidden(client):
    assert client.get("/conflict").status_code == 500
    assert client.get("/fine").status_code == 200
