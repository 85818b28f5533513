"""Error pages in the panel's look (DEBUG off, as deployed), and the favicon.

Actors: bob (viewer), an anonymous visitor. The 500 page is rendered by Django's own handler with
no request context; it must not touch the database, which may be what failed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client, RequestFactory
from django.urls import path, reverse
from django.views.defaults import server_error
from rest_framework.views import APIView

from project.urls import handler500 as project_handler500
from project.urls import urlpatterns as project_urlpatterns

pytestmark = pytest.mark.django_db

STATIC = Path(__file__).resolve().parents[2] / "static" / "panel"


def boom(request):
    raise RuntimeError("a bug in a view")


class BoomAPI(APIView):
    permission_classes: list = []

    def get(self, request):
        raise RuntimeError("a bug in an API view with a secret")


# This module is the URL map of the 500 tests: the project's, plus views that fail.
urlpatterns = [path("boom/", boom), path("api/boom", BoomAPI.as_view()), *project_urlpatterns]
handler500 = project_handler500


def test_the_tests_run_as_deployed_with_debug_off():
    assert settings.DEBUG is False


def _panel_error_page(html: str, code: int) -> None:
    assert f'data-status="{code}"' in html
    assert "panel/panel.css" in html  # the panel's look, through the base template
    assert 'href="/" data-link="home"' in html  # a way home
    assert 'rel="icon"' in html


def test_an_unknown_url_answers_404_with_the_panels_page(client, viewer_client):
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    html = response.content.decode()
    _panel_error_page(html, 404)
    assert "Page not found" in html and "<code>/no/such/page/</code>" in html
    assert 'href="/runs/"' not in html  # an anonymous visitor gets no navigation into the panel

    response = viewer_client.get("/no/such/page/")
    assert response.status_code == 404
    html = response.content.decode()
    _panel_error_page(html, 404)
    assert f'href="{reverse("panel:runs")}"' in html and f'href="{reverse("panel:models")}"' in html


def test_a_missing_object_answers_the_same_404_page(viewer_client):
    for url in (reverse("panel:run", args=[987654]), reverse("panel:model", args=[987654])):
        response = viewer_client.get(url)
        assert response.status_code == 404, url
        _panel_error_page(response.content.decode(), 404)


def test_unknown_api_paths_keep_their_json_404(viewer_client):
    response = viewer_client.get("/api/no-such-endpoint")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")


def test_a_viewers_forged_control_gets_the_403_page(viewer_client):
    response = viewer_client.post(reverse("panel:cycle"))
    assert response.status_code == 403
    html = response.content.decode()
    _panel_error_page(html, 403)
    assert "bob may look but not act" in html


def test_a_failing_view_answers_500_with_the_panels_page(settings):
    settings.ROOT_URLCONF = __name__
    client = Client(raise_request_exception=False)
    response = client.get("/boom/")
    assert response.status_code == 500
    html = response.content.decode()
    _panel_error_page(html, 500)
    assert "Something went wrong" in html and "a bug in a view" not in html


def test_a_failing_api_view_answers_500_in_the_api_error_shape(settings):
    settings.ROOT_URLCONF = __name__
    client = Client(raise_request_exception=False)
    response = client.get("/api/boom")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "server_error" and "secret" not in response.content.decode()
    # A page (or a browser on an API path asking for HTML) still gets the panel's page.
    assert "Something went wrong" in client.get("/boom/").content.decode()


def test_the_500_page_reads_nothing_from_the_database(django_assert_num_queries):
    request = RequestFactory().get("/anything/")
    with django_assert_num_queries(0):
        response = server_error(request)
    assert response.status_code == 500
    _panel_error_page(response.content.decode(), 500)


def test_favicon_ico_redirects_to_a_served_icon_and_pages_link_one(client, viewer_client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    target = response["Location"]
    icon = client.get(target)
    assert icon.status_code == 200
    body = b"".join(icon.streaming_content) if icon.streaming else icon.content
    assert body == (STATIC / "favicon.ico").read_bytes()
    assert body[:4] == b"\x00\x00\x01\x00"  # an ICO header

    html = viewer_client.get(reverse("panel:runs")).content.decode()
    svg = "/static/panel/favicon.svg"
    assert f'<link rel="icon" href="{svg}" type="image/svg+xml">' in html
    served = client.get(svg)
    assert served.status_code == 200
    assert b"".join(served.streaming_content).startswith(b"<svg")
