"""The predict fast lane (``project.fastlane``): ordinary predict requests answered without Django's
request cycle, with the same answer, headers, throttle and no query; everything else answered by
Django exactly as before."""

from __future__ import annotations

import io
import json
import sys

import pytest
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections, connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from models_registry.serving.choices import SwitchReason
from models_registry.serving.predict import Prediction
from models_registry.serving.switching import NEURAL, serving_switch
from project.api.authentication import token_cache
from project.fastlane import PredictFastLane
from tests.models_registry.serving.helpers import blobs_inputs

pytestmark = pytest.mark.django_db

VARYING = {"date", "content-length", "x-predict-lane"}


@pytest.fixture
def lane():
    """The fast lane in front of Django's WSGI handler. Like Django's test client, requests must
    not close the test's database connection, so that signal receiver is disconnected meanwhile."""
    cache.clear()
    lane = PredictFastLane(get_wsgi_application())
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield lane
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
        cache.clear()


def _call(app, path: str, *, body: bytes | None = None, token: str | None = None, host: str = "testserver",
          content_type: str = "application/json", extra: dict | None = None):
    data = body or b""
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "", "SERVER_NAME": "testserver",
        "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": host, "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(data)), "wsgi.input": io.BytesIO(data), "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False,
        "wsgi.version": (1, 0), **(extra or {}),
    }
    if token is not None:
        environ["HTTP_AUTHORIZATION"] = f"Token {token}"
    seen: dict = {}

    def start_response(status, headers, exc_info=None):
        seen["status"], seen["headers"] = int(status.split()[0]), headers

    chunks = app(environ, start_response)
    payload = b"".join(chunks)
    if hasattr(chunks, "close"):
        chunks.close()
    return seen["status"], seen["headers"], payload


def _predict_body(rows: list | None = None) -> bytes:
    return json.dumps({"inputs": rows if rows is not None else blobs_inputs(1)[0]}).encode()


@pytest.fixture
def neural_task(served_task):
    task, _model, _v1, v2 = served_task
    serving_switch(task=task, implementation=NEURAL, version=v2, reason=SwitchReason.OPERATOR)
    return task


def test_a_warm_predict_is_answered_by_the_lane_like_django_with_no_query(lane, neural_task, viewer):
    token = Token.objects.create(user=viewer).key
    path = f"/api/tasks/{neural_task.slug}/predict"
    status, django_headers, django_body = _call(lane, path, body=_predict_body(), token=token)
    assert status == 200 and lane.served == 0  # the first answer is Django's: token verified, headers learnt

    with CaptureQueriesContext(connection) as queries:
        status, headers, body = _call(lane, path, body=_predict_body(), token=token)
    assert status == 200, body
    assert lane.served == 1
    assert len(queries) == 0, [q["sql"] for q in queries.captured_queries]
    fast, slow = json.loads(body), json.loads(django_body)
    assert fast.pop("prediction_id") and slow.pop("prediction_id")  # signed per answer (a nonce): differ
    assert fast == slow and fast["implementation"] == "neural"
    assert int(dict(headers)["Content-Length"]) == len(body)
    assert dict(headers)["X-Predict-Lane"] == "fast" and "X-Predict-Lane" not in dict(django_headers)

    def stable(items):
        return {(name.lower(), value) for name, value in items if name.lower() not in VARYING}

    assert stable(headers) == stable(django_headers)
    assert {"x-content-type-options", "x-frame-options", "content-type"} <= {name for name, _ in stable(headers)}


def test_a_batch_and_labels_match_django(lane, served_task, viewer):
    task = served_task[0]  # served by its algorithm
    token = Token.objects.create(user=viewer).key
    path = f"/api/tasks/{task.slug}/predict"
    rows = blobs_inputs(5, seed=3)
    first = json.loads(_call(lane, path, body=_predict_body(rows), token=token)[2])
    second = json.loads(_call(lane, path, body=_predict_body(rows), token=token)[2])
    assert lane.served == 1
    assert second["labels"] == first["labels"] and len(second["labels"]) == 5
    assert second["outputs"] == first["outputs"] and second["implementation"] == "algorithmic"


def test_every_refusal_is_djangos_in_the_api_error_shape(lane, neural_task, viewer, settings):
    token = Token.objects.create(user=viewer).key
    path = f"/api/tasks/{neural_task.slug}/predict"
    assert _call(lane, path, body=_predict_body(), token=token)[0] == 200  # learnt and cached
    cases = {
        "wrong shape": (dict(body=_predict_body([[1.0, 2.0]]), token=token), 400, "invalid_input"),
        "not JSON": (dict(body=b"{inputs", token=token), 400, None),
        "no inputs": (dict(body=b'{"rows": [1]}', token=token), 400, "invalid_input"),
        "non-finite": (dict(body=b'{"inputs": [1e999, 0, 0, 0]}', token=token), 400, "invalid_input"),
        "unknown task": (dict(body=_predict_body(), token=token, path="/api/tasks/nope/predict"), 404, None),
        "unknown token": (dict(body=_predict_body(), token="0" * 40), 401, None),
        "no token": (dict(body=_predict_body()), 401, None),
        "host not allowed": (dict(body=_predict_body(), token=token, host="evil.example"), 400, None),
        "over the limit": (dict(body=_predict_body(), token=token, extra={"CONTENT_LENGTH": str(64 * 1024 * 1024)}),
                           413, "payload_too_large"),
    }
    for name, (kwargs, expected, code) in cases.items():
        target = kwargs.pop("path", path)
        status, _headers, body = _call(lane, target, **kwargs)
        assert status == expected, (name, body[:300])
        if code is not None:
            assert json.loads(body)["error"]["code"] == code, (name, body[:300])
    assert lane.served == 0


def test_a_request_with_a_cookie_takes_the_ordinary_path(lane, neural_task, viewer):
    token = Token.objects.create(user=viewer).key
    path = f"/api/tasks/{neural_task.slug}/predict"
    _call(lane, path, body=_predict_body(), token=token)
    status, _headers, _ = _call(lane, path, body=_predict_body(), token=token, extra={"HTTP_COOKIE": "a=b"})
    assert status == 200 and lane.served == 0


def test_the_throttle_counts_lane_and_django_answers_alike(lane, neural_task, viewer, settings):
    _predict_rate(settings, "3/hour")
    token = Token.objects.create(user=viewer).key
    path = f"/api/tasks/{neural_task.slug}/predict"
    statuses = [_call(lane, path, body=_predict_body(), token=token) for _ in range(5)]
    assert [s[0] for s in statuses] == [200, 200, 200, 429, 429]
    assert lane.served == 2  # the first by Django, two by the lane, the refusals by Django
    refused = dict(statuses[3][1])
    assert int(refused["Retry-After"]) > 0 and json.loads(statuses[3][2])["error"]["code"] == "throttled"


def test_a_revoked_token_is_refused_at_once(lane, neural_task, viewer):
    token = Token.objects.create(user=viewer)
    path = f"/api/tasks/{neural_task.slug}/predict"
    assert _call(lane, path, body=_predict_body(), token=token.key)[0] == 200
    assert _call(lane, path, body=_predict_body(), token=token.key)[0] == 200 and lane.served == 1
    token.delete()
    assert token_cache.get(token.key) is None
    assert _call(lane, path, body=_predict_body(), token=token.key)[0] == 401
    assert lane.served == 1


def test_the_setting_turns_the_lane_off(lane, neural_task, viewer, settings):
    settings.PLASTICITY_PREDICT_FAST_LANE = False
    token = Token.objects.create(user=viewer).key
    path = f"/api/tasks/{neural_task.slug}/predict"
    for _ in range(3):
        assert _call(lane, path, body=_predict_body(), token=token)[0] == 200
    assert lane.served == 0


def test_an_unexpected_failure_is_answered_by_django(lane, neural_task, viewer, monkeypatch):
    from models_registry.serving.predict import Prediction

    token = Token.objects.create(user=viewer).key
    path = f"/api/tasks/{neural_task.slug}/predict"
    assert _call(lane, path, body=_predict_body(), token=token)[0] == 200

    def broken(self):
        raise RuntimeError("a defect")

    monkeypatch.setattr(Prediction, "answer", broken)
    status, headers, body = _call(lane, path, body=_predict_body(), token=token)
    assert status == 500 and lane.served == 0
    assert "X-Predict-Lane" not in dict(headers)  # Django's own 500 (project.views.server_error), not the lane's
    assert json.loads(body)["error"]["code"] == "server_error"


def test_other_requests_pass_through_untouched(lane, neural_task, viewer):
    token = Token.objects.create(user=viewer).key
    status, _headers, body = _call(lane, f"/api/tasks/{neural_task.slug}/serving", token=token,
                                   extra={"REQUEST_METHOD": "GET"})
    assert status == 200 and json.loads(body)["task"] == neural_task.slug
    assert lane.served == 0


class _ReadCounter(io.BytesIO):
    """The server's request stream (``wsgi.input``), counting the bytes anyone reads from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk

    def readline(self, size: int | None = -1) -> bytes:
        line = super().readline(size)
        self.bytes_read += len(line)
        return line


def _predict_rate(settings, rate: str) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {
        **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "predict": rate}}


def test_a_throttled_client_is_refused_before_its_body_is_read(lane, neural_task, viewer, settings):
    """As in DRF, the throttles come before the body: a throttled client cannot make the lane read
    and parse up to ``PLASTICITY_PREDICT_MAX_BYTES`` of JSON per request before its 429."""
    _predict_rate(settings, "2/hour")
    token = Token.objects.create(user=viewer).key
    path = f"/api/tasks/{neural_task.slug}/predict"
    assert _call(lane, path, body=_predict_body(), token=token)[0] == 200  # Django's: headers learnt
    assert _call(lane, path, body=_predict_body(), token=token)[0] == 200 and lane.served == 1  # the budget spent
    for body in (b"{inputs" + b" " * 4096, _predict_body()):  # a 400 if anything parsed it; a valid one
        stream = _ReadCounter(body)
        status, headers, payload = _call(lane, path, body=body, token=token, extra={"wsgi.input": stream})
        assert status == 429, payload[:300]
        assert json.loads(payload)["error"]["code"] == "throttled" and int(dict(headers)["Retry-After"]) > 0
        assert stream.bytes_read == 0  # neither the lane nor Django read (let alone parsed) a byte of it
    assert lane.served == 1


@pytest.mark.parametrize("case", ["wrong shape", "not JSON", "unknown task", "defect"])
def test_a_request_the_lane_hands_to_django_counts_once_against_the_throttle(lane, neural_task, viewer, settings,
                                                                             monkeypatch, case):
    """The lane's throttles count a request before its body is read; when Django answers it after
    all (and counts it in the view), the lane's count is given back: a budget of 4 takes 4 requests."""
    _predict_rate(settings, "4/hour")
    token = Token.objects.create(user=viewer).key
    path = f"/api/tasks/{neural_task.slug}/predict"
    assert _call(lane, path, body=_predict_body(), token=token)[0] == 200  # Django's (1 of 4): headers learnt
    kwargs, expected = {
        "wrong shape": (dict(path=path, body=_predict_body([[1.0, 2.0]])), 400),
        "not JSON": (dict(path=path, body=b"{inputs"), 400),
        "unknown task": (dict(path="/api/tasks/nope/predict", body=_predict_body()), 404),
        "defect": (dict(path=path, body=_predict_body()), 500),
    }[case]
    if case == "defect":
        def broken(self):
            raise RuntimeError("a defect")

        monkeypatch.setattr(Prediction, "answer", broken)
    statuses = [_call(lane, kwargs["path"], body=kwargs["body"], token=token)[0] for _ in range(4)]
    assert statuses == [expected, expected, expected, 429]  # counted twice, it would be [expected, 429, ...]
    assert lane.served == 0


@pytest.mark.parametrize("suffix", ["/", "\n"], ids=["trailing slash", "trailing newline"])
def test_a_path_django_does_not_route_gets_djangos_answer(lane, neural_task, viewer, suffix):
    """The predict route has no trailing slash (``tasks/<str:slug>/predict``): the lane answers
    only that path, and leaves any other (a 404 of Django's) to Django."""
    token = Token.objects.create(user=viewer).key
    path = f"/api/tasks/{neural_task.slug}/predict"
    assert _call(lane, path, body=_predict_body(), token=token)[0] == 200  # warm: the lane would answer `path`
    status, headers, body = _call(lane, path + suffix, body=_predict_body(), token=token)
    django_status, django_headers, django_body = _call(get_wsgi_application(), path + suffix,
                                                       body=_predict_body(), token=token)
    assert status == django_status == 404, body[:300]
    content_type = dict(headers)["Content-Type"]
    assert content_type == dict(django_headers)["Content-Type"]
    if content_type.startswith("application/json"):  # the API's JSON 404 (an HTML page for the newline)
        assert json.loads(body) == json.loads(django_body)
    assert "X-Predict-Lane" not in dict(headers) and lane.served == 0
