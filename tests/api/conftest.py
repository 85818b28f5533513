"""API test fixtures: token clients for the named actors, a WSGI app for clients that speak
plain HTTP, and fresh throttle counters for every test."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


@pytest.fixture(autouse=True)
def _fresh_throttles():
    """Throttle counters live in the cache; one test's requests must not throttle the next."""
    cache.clear()
    yield
    cache.clear()


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


@pytest.fixture
def anon() -> APIClient:
    """Charlie: no credentials."""
    return APIClient()


@pytest.fixture
def alice(operator) -> APIClient:
    return token_client(operator)


@pytest.fixture
def bob(viewer) -> APIClient:
    return token_client(viewer)


@pytest.fixture
def root(django_user_model) -> APIClient:
    """A superuser: the only actor who may name an algorithm (code the server runs)."""
    return token_client(django_user_model.objects.create_superuser("root", password="root-pass-123"))


@pytest.fixture
def wsgi_app():
    """The project's WSGI application, for clients that speak plain HTTP (httpx, schemathesis).

    Like Django's test client, requests must not close the test's database connection. The
    test client reconnects the signal that would after each of its own requests, so it is
    disconnected again at every call here, and reconnected when the test ends.
    """
    from django.core.signals import request_finished, request_started
    from django.core.wsgi import get_wsgi_application
    from django.db import close_old_connections

    handler = get_wsgi_application()

    def app(environ, start_response):
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        return handler(environ, start_response)

    try:
        yield app
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
