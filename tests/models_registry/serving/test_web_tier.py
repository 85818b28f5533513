"""``manage.py serve`` as deployed: gunicorn worker processes for HTTP, daphne for /ws/ on the next port.

One real server against the test database: a promotion committed here is served by every
gunicorn process; the pages point the browser at the WebSocket server, which accepts a
signed-in session and pushes the promotion's event.
"""

from __future__ import annotations

import json
import time

import pytest
import requests
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from rest_framework.authtoken.models import Token
from websockets.sync.client import connect

from models_registry.services import version_activate
from models_registry.serving.choices import SwitchReason
from models_registry.serving.switching import NEURAL, serving_switch
from tests.distributed.services import wait_for
from tests.factories import trained_version
from tests.models_registry.serving.helpers import blobs_inputs, gunicorn_workers
from tests.workers import web_tier

WEB_WORKERS = 2


@pytest.mark.django_db(transaction=True)
def test_serve_runs_gunicorn_workers_and_a_websocket_server(served_task, operator, tmp_path):
    if connection.vendor == "sqlite" and str(connection.settings_dict["NAME"]).startswith((":memory:", "file:")):
        pytest.skip("needs a database file both processes can open")
    task, model, v1, v2 = served_task
    v3 = trained_version(model, seed=2, epochs=8, activate=False, parent=v2)
    # Pinned to neural (the quick versions do not beat the task's algorithm); a pinned neural
    # state follows the active version, so the promotion below must be served.
    serving_switch(task=task, implementation=NEURAL, version=v2, reason=SwitchReason.OPERATOR, pinned=True)
    token = Token.objects.create(user=operator).key
    browser = Client()
    browser.force_login(operator)
    cookie = f"{django_settings.SESSION_COOKIE_NAME}={browser.cookies[django_settings.SESSION_COOKIE_NAME].value}"

    with web_tier(log_path=tmp_path / "serve.log", start_timeout_s=120, web_workers=WEB_WORKERS) as (
            base, ws_base, serve):
        ws_port = int(ws_base.rsplit(":", 1)[1])  # ws://127.0.0.1:<port>
        url = f"{base}/api/tasks/{task.slug}/predict"
        headers = {"Authorization": f"Token {token}"}
        body = {"inputs": blobs_inputs(1)[0]}

        lanes: list[str | None] = []

        def predict() -> dict | None:
            try:
                # A new connection each time: the kernel hands each to whichever gunicorn process accepts it.
                answer = requests.post(url, json=body, headers={**headers, "Connection": "close"}, timeout=10)
            except requests.RequestException:
                return None
            assert answer.status_code == 200, answer.text
            lanes.append(answer.headers.get("X-Predict-Lane"))
            return answer.json()

        first = wait_for(predict, timeout_s=120, what="the web tier answering")
        assert (first["implementation"], first["version_id"]) == ("neural", v2.pk)
        workers = wait_for(lambda: len(gunicorn_workers(serve)) >= WEB_WORKERS and gunicorn_workers(serve),
                            timeout_s=60, what="gunicorn's worker processes")
        assert len(workers) == WEB_WORKERS

        # The page tells the browser where the WebSockets are.
        page = requests.get(f"{base}/", headers={"Cookie": cookie}, timeout=30)
        assert page.status_code == 200
        assert f'data-ws-port="{ws_port}"' in page.text
        # The WebSocket server is for /ws/ only: its HTTP side answers the health check, and nothing else.
        ws_http = f"http://127.0.0.1:{ws_port}"
        assert requests.get(f"{ws_http}/healthz", timeout=30).status_code == 200
        for path, method in (("/", "GET"), ("/api/ping", "GET"), (f"/api/tasks/{task.slug}/predict", "POST")):
            refused = requests.request(method, f"{ws_http}{path}", json=body, headers=headers, timeout=30)
            assert refused.status_code == 404, (path, refused.status_code)
            assert refused.json()["error"]["code"] == "not_found"

        ws = wait_for(lambda: _try_connect(ws_base, cookie, base), timeout_s=60, what="the WebSocket")
        try:
            version_activate(version=v3, reason="promotion seen by every web process")
            # Every process serves it: 2 × 10 consecutive answers on fresh connections all name v3.
            streak = 0
            deadline = time.monotonic() + 60
            while streak < 10 * WEB_WORKERS:
                assert time.monotonic() < deadline, "the promotion was not served by every process"
                answer = predict()
                streak = streak + 1 if answer and answer["version_id"] == v3.pk else 0
            # Once a process has verified the token (again after each token-cache TTL), the predict fast
            # lane answers (project.fastlane): most of the streak came from it, all with the promotion.
            streak_lanes = lanes[-10 * WEB_WORKERS:]
            assert streak_lanes.count("fast") >= len(streak_lanes) // 2, lanes
            messages = []
            deadline = time.monotonic() + 30
            while not any(m.get("type") != "resync" for m in messages):
                assert time.monotonic() < deadline, f"no event pushed over the WebSocket: {messages}"
                try:
                    messages.append(json.loads(ws.recv(timeout=1.0)))
                except TimeoutError:
                    continue
        finally:
            ws.close()
        # An anonymous WebSocket is refused.
        with pytest.raises(Exception):  # noqa: B017 - the handshake is rejected (403) or closed at once
            anonymous = connect(f"{ws_base}/ws/live/?after=0", origin=base, open_timeout=5)
            anonymous.recv(timeout=5)


def _try_connect(ws_base: str, cookie: str, origin: str):
    try:
        # Entered as a context manager (websockets warns otherwise); closed by the caller.
        return connect(f"{ws_base}/ws/live/?after=0", additional_headers={"Cookie": cookie},
                       origin=origin, open_timeout=5).__enter__()
    except OSError:
        return None
