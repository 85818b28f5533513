"""The predict fast lane: a WSGI layer that answers ordinary predict requests without Django's
request cycle, and hands everything else to Django unchanged.

A single-row predict spends most of its time in the web stack, not the model: Django's request
object and signals, eleven middleware layers, URL resolution, DRF's request wrapper,
authentication, content negotiation and rendering (under load, py-spy put the model itself
at 8 % of a request's time and the stack around it at over 60 %). Machine clients send the
same kind of request over and over, so this layer serves that kind directly, with the same
components the DRF view uses: the token cache, the view's own throttles, the predict parser,
the input check, the router, ``serving_predict`` and ``Prediction.answer``.

It answers a request itself only when every one of these holds, and otherwise passes the
untouched request (its body included) to Django, which answers it as before:

* ``POST /api/tasks/<slug>/predict`` with a JSON body of a declared length within
  ``PLASTICITY_PREDICT_MAX_BYTES``, ``Authorization: Token <key>`` and no cookie;
* the token is in this process's token cache, i.e. Django verified it within the cache's TTL
  (revocation drops it: see ``project.api.authentication``);
* Django has already answered a predict request 200 for the same host, scheme and forwarding
  headers in this process: the headers of that answer (security headers, content type, and
  whatever the deployment's middleware adds) are reused, and an unknown host is therefore
  always checked by Django first (``ALLOWED_HOSTS``, HTTPS redirects);
* the view's throttles allow the request (checked before the body is read, as DRF checks them
  before parsing: a throttled client's body is never read or parsed by the lane), and then the
  body parses, the task can be served and the inputs meet its contract.

A request handed to Django after the lane's throttles counted it gets its allowance back first
(``GCRAThrottle.refund``), since Django's view counts it again: every request counts once.

Any refusal or error is therefore written by the one DRF implementation, in the API's error
shape; the fast lane never answers a 4xx. A neural failure the algorithm cannot stand in for is
the only error it writes (the same body as the view's 500); any other exception is logged and the
request handed to Django, whose error handling answers it. ``PLASTICITY_PREDICT_FAST_LANE``
(on by default) turns it off.

Database connections: a request served here makes no query (the router re-reads the serving
table on its own schedule and closes a broken connection itself), so Django's per-request
connection housekeeping is not needed for it.
"""

from __future__ import annotations

import logging
import threading
from io import BytesIO
from types import SimpleNamespace
from typing import Any

import orjson

from models_registry.api.parsers import predict_json_loads
from models_registry.api.serving_views import TaskPredictView
from models_registry.serving.conf import serving_setting
from models_registry.serving.inputs import inputs_validate
from models_registry.serving.predict import PredictionFailed, serving_predict
from models_registry.serving.router import serving_router
from project.api.authentication import token_cache
from project.api.errors import error_body
from project.middleware import PREDICT_PATH

logger = logging.getLogger(__name__)

#: Hosts (with scheme and forwarding headers) whose answer headers are remembered, at most.
MAX_TEMPLATES = 64
#: Headers of an answer that are not reused: they belong to one response.
_PER_RESPONSE = frozenset({"content-length", "date", "server", "set-cookie", "connection", "transfer-encoding"})
_OK = "200 OK"
#: Marks an answer of the lane (Django's answers do not carry it): for operators and tests.
LANE_HEADER = ("X-Predict-Lane", "fast")
_FAILED = "500 Internal Server Error"


def _template_key(environ: dict) -> tuple:
    return (environ.get("HTTP_HOST"), environ.get("wsgi.url_scheme"), environ.get("HTTP_X_FORWARDED_PROTO"),
            environ.get("HTTP_X_FORWARDED_HOST"), environ.get("HTTP_X_FORWARDED_PORT"))


def _token(environ: dict) -> str | None:
    """The key of ``Authorization: Token <key>``, read as DRF's ``TokenAuthentication`` reads it."""
    parts = environ.get("HTTP_AUTHORIZATION", "").split()
    if len(parts) != 2 or parts[0].lower() != "token":
        return None
    return parts[1]


class PredictFastLane:
    """WSGI middleware: predict requests that need nothing of Django's request cycle, answered here."""

    def __init__(self, application) -> None:
        self.application = application
        self._templates: dict[tuple, list[tuple[str, str]]] = {}
        self._lock = threading.Lock()
        self.served = 0  # answered here (tests and the benchmark read it)

    def __call__(self, environ: dict, start_response):
        match = PREDICT_PATH.match(environ.get("PATH_INFO", ""))
        if match is None or environ.get("REQUEST_METHOD") != "POST" or "HTTP_COOKIE" in environ:
            return self.application(environ, start_response)
        answered = self._answer(environ, match.group(1), start_response)
        if answered is not None:
            return answered
        return self._to_django(environ, start_response)

    # ------------------------------------------------------------------ Django's answers

    def _to_django(self, environ: dict, start_response):
        """Django answers; a 200 teaches the lane this host's answer headers."""
        key = _template_key(environ)
        if key in self._templates or not serving_setting("PLASTICITY_PREDICT_FAST_LANE"):
            return self.application(environ, start_response)

        def remember(status: str, headers: list[tuple[str, str]], exc_info=None):
            if status.startswith("200 "):
                template = [(name, value) for name, value in headers if name.lower() not in _PER_RESPONSE]
                with self._lock:
                    if len(self._templates) < MAX_TEMPLATES:
                        self._templates[key] = template
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        return self.application(environ, remember)

    # ------------------------------------------------------------------ the lane

    def _answer(self, environ: dict, slug: str, start_response) -> list[bytes] | None:
        """The answer, or None to hand the request to Django (whose body is then put back)."""
        template = self._templates.get(_template_key(environ))
        if template is None or not environ.get("CONTENT_TYPE", "").startswith("application/json"):
            return None
        key = _token(environ)
        cached = token_cache.get(key) if key is not None else None
        if cached is None or not serving_setting("PLASTICITY_PREDICT_FAST_LANE"):
            return None
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            return None  # chunked or malformed: the body limit middleware decides
        if length <= 0 or length > serving_setting("PLASTICITY_PREDICT_MAX_BYTES"):
            return None
        # The throttles come before the body, as in DRF (``initial`` runs before anything reads
        # ``request.data``): a throttled client's body is neither read nor parsed here, and
        # Django, which then writes the 429, does not read it either.
        counted = self._throttle(cached[0])
        if counted is None:
            return None
        answered = None
        try:
            answered = self._answer_counted(environ, slug, length, template, start_response)
        finally:
            if answered is None:  # handed to Django, which counts it again (or failed: never answered)
                self._refund(counted)
        return answered

    def _answer_counted(self, environ: dict, slug: str, length: int, template: list[tuple[str, str]],
                        start_response) -> list[bytes] | None:
        """The rest of ``_answer``, once the throttles have counted the request."""
        body = environ["wsgi.input"].read(length)
        # From here on, a hand-over must give Django the body it would have read.
        environ["wsgi.input"] = BytesIO(body)
        if len(body) != length:
            return None
        try:
            data = predict_json_loads(body)
            route = serving_router().route(slug)
            if not isinstance(data, dict) or "inputs" not in data:
                return None
            X, _single = inputs_validate(data["inputs"], input_shape=route.task.input_shape,
                                         max_batch=serving_setting("PLASTICITY_MAX_BATCH"))
        except Exception:  # noqa: BLE001 - every refusal is Django's to write, in the API's error shape
            return None
        try:
            prediction = serving_predict(route=route, X=X)
            answer = prediction.answer()
        except PredictionFailed as exc:
            return self._respond(start_response, _FAILED, template, error_body("prediction_failed", str(exc)))
        except Exception:  # noqa: BLE001 - a defect: Django answers it again, through its own error handling
            logger.exception("predict fast lane: %s failed; handed to Django", slug)
            return None
        self.served += 1
        return self._respond(start_response, _OK, template, answer)

    @staticmethod
    def _throttle(user) -> tuple[Any, list] | None:
        """The predict view's own throttles, as DRF's ``check_throttles`` runs them: every one, and
        each that allows the request counts it. They read the user (and, for an anonymous one, the
        address: never here) and the view's scope. Returns what ``_refund`` gives back should
        Django answer the request after all (the request and the throttles that counted it), or
        None when one refuses, having given back the counts of the others: Django runs them all
        again to write the 429."""
        request: Any = SimpleNamespace(user=user, META={})
        view: Any = TaskPredictView
        allowed = [throttle for throttle in (cls() for cls in TaskPredictView.throttle_classes)
                   if throttle.allow_request(request, view)]
        counted = (request, allowed)
        if len(allowed) < len(TaskPredictView.throttle_classes):
            PredictFastLane._refund(counted)
            return None
        return counted

    @staticmethod
    def _refund(counted: tuple[Any, list]) -> None:
        """Gives back what ``_throttle`` counted (``GCRAThrottle.refund``), before a hand-over to Django."""
        request, throttles = counted
        view: Any = TaskPredictView
        for throttle in throttles:
            throttle.refund(request, view)

    @staticmethod
    def _respond(start_response, status: str, template: list[tuple[str, str]], answer: Any) -> list[bytes]:
        payload = orjson.dumps(answer)
        start_response(status, [*template, LANE_HEADER, ("Content-Length", str(len(payload)))])
        return [payload]

