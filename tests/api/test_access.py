"""Who may call what, checked over every URL the resolver knows and every operation in the schema.

The URL list is enumerated from ``get_resolver()`` (not written by hand), so a new view that
forgets its permission fails here. The few URLs that are public on purpose are listed in
``PUBLIC`` with the reason.
"""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.resolvers import RoutePattern

from improvement.runs.lifecycle import run_create
from models_registry.services import model_create
from models_registry.task_jobs import task_job_create
from tests.factories import csv_task, trained_version

pytestmark = pytest.mark.django_db

# Public on purpose (GET, anonymous): path -> (expected status, why).
PUBLIC = {
    "healthz": (200, "liveness probe for load balancers; answers only ok/unavailable"),
    "accounts/login/": (200, "the login form itself"),
    "accounts/logout/": (405, "POST only; a GET changes nothing"),
    "admin/login/": (200, "the admin's login form"),
    "admin/logout/": (302, "logs out nobody; redirects to the admin index, which asks for a login"),
    "favicon.ico": (301, "browsers ask for it on every page, the login page included: a redirect to the static icon"),
}
# API paths an anonymous client may call (any method): path -> why.
PUBLIC_API = {
    "api/auth/token": "exchanges a username and password for a token: it cannot require one "
                      "(throttled by the 'login' scope; GET is 405, a bad password 400)",
}
# Static files (/static/...) are served by WhiteNoise middleware, not by a URL pattern: the CSS and
# JavaScript of the panel, the admin and the API docs are public by nature and hold no data.
API_METHODS = ("get", "head", "options", "post", "put", "patch", "delete")


def _walk(patterns, prefix=""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, prefix + _piece(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + _piece(entry.pattern), entry


def _sample(name: str, body: str | None = None) -> str:
    if body and re.fullmatch(r"[\w|-]+", body):
        return body.split("|")[0]  # an alternation of literals (admin app labels): take one
    if name in {"url", "path"}:
        return "no-such-page"
    if name == "slug":
        return "sample"
    return "1"  # ids and pks


def _piece(pattern) -> str:
    """A concrete path for one pattern piece: parameters filled with plausible values."""
    if isinstance(pattern, RoutePattern):
        return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: _sample(m.group(1)), str(pattern))
    regex = str(pattern)
    out, i = "", 0
    while i < len(regex):
        match = re.match(r"\(\?P<(\w+)>", regex[i:])
        if match:
            depth, j = 1, i + match.end()
            while depth:
                depth += {"(": 1, ")": -1}.get(regex[j], 0) if regex[j - 1] != "\\" else 0
                j += 1
            out += _sample(match.group(1), regex[i + match.end(): j - 1])
            i = j
        else:
            out += regex[i]
            i += 1
    out = out.replace(".*", "no-such-endpoint").replace("\\.", ".")
    return out.replace("^", "").replace("$", "")


def all_urls() -> list[tuple[str, URLPattern]]:
    urls = []
    for path, entry in _walk(get_resolver().url_patterns):
        match = resolve("/" + path)
        assert match.func == entry.callback or getattr(match.func, "cls", 0) == getattr(entry.callback, "cls", 1), (
            f"the sample path /{path} for pattern {entry.pattern!r} resolves to another view; "
            "teach _sample() a value for its parameters"
        )
        urls.append((path, entry))
    return urls


def test_the_enumeration_finds_every_part_of_the_site():
    paths = {path for path, _ in all_urls()}
    for expected in ("", "healthz", "admin/", "api/tasks", "api/runs/1/cancel", "api/versions/1/onnx",
                     "api/export", "api/schema/", "api/docs/", "api/no-such-endpoint"):
        assert expected in paths
    assert len(paths) > 100


def test_every_url_refuses_anonymous_visitors():
    client = Client()
    problems = []
    for path, _entry in all_urls():
        url = "/" + path
        if path in PUBLIC:
            expected, _why = PUBLIC[path]
            status = client.get(url).status_code
            if status != expected:
                problems.append(f"GET {url}: {status}, expected {expected} ({_why})")
            continue
        if path.startswith("api/"):
            for method in API_METHODS:
                response = getattr(client, method)(url)
                if path in PUBLIC_API:
                    if response.status_code in (401, 403) or response.status_code >= 500:
                        problems.append(f"{method.upper()} {url}: {response.status_code} (should be public)")
                    continue
                if response.status_code not in (401, 403):
                    problems.append(f"{method.upper()} {url}: {response.status_code}, expected 401/403")
                elif response.get("Content-Type", "").startswith("application/json") and method != "head" and \
                        response.json()["error"]["code"] not in (
                        "not_authenticated", "authentication_failed", "permission_denied"):
                    problems.append(f"{method.upper()} {url}: unexpected error body {response.content[:200]!r}")
            continue
        # Admin and panel pages: the login redirect (or a refusal), never content. POST-only pages
        # may answer a GET with 405 (nothing is done), but a POST must then be refused too.
        login = "/admin/login/" if path.startswith("admin/") else settings.LOGIN_URL
        for method in ("get", "post"):
            response = getattr(client, method)(url)
            if response.status_code in (401, 403) or (method == "get" and response.status_code == 405):
                continue
            if response.status_code != 302 or not response["Location"].startswith(login):
                problems.append(f"{method.upper()} {url}: {response.status_code} {response.get('Location', '')}, "
                                f"expected a redirect to {login}")
    assert not problems, "\n".join(problems)


def test_a_bad_token_is_refused_in_the_error_shape(anon):
    anon.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = anon.get("/api/tasks")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["error"]["code"] == "authentication_failed"


# --------------------------------------------------------------------- operator / viewer matrix

# Writes a viewer may make: path template -> why.
VIEWER_MAY_WRITE = {
    "/api/auth/token": "anyone may exchange their own credentials for a token",
    "/api/tasks/{slug}/predict": "a prediction is a read of the served model (POST only for the body)",
    "/api/tasks/{slug}/feedback": "a client that may predict reports the truth of its own predictions",
}
WRITE_METHODS = ("post", "put", "patch", "delete")


@pytest.fixture
def world():
    """One of everything, so every path parameter can be filled with a real object."""
    task = csv_task(n=120)
    model = model_create(task=task, name="m")
    v1 = trained_version(model, epochs=1)
    v2 = trained_version(model, epochs=1, seed=1, parent=v1)
    run = run_create(model=model, strategy="training", enqueue=False)
    job = task_job_create(name="generated", algorithm_path="tests.api.helpers.sum_of_squares",
                          sampler_spec={"shape": [2]})
    return {"task": task, "model": model, "versions": [v1, v2], "run": run, "job": job}


def _fill(template: str, world: dict) -> str:
    def value(match: re.Match) -> str:
        resource, name = match.string[: match.start()].rstrip("/").split("/")[-1], match.group(1)
        objects = {"tasks": world["task"].slug, "models": world["model"].pk, "versions": world["versions"][0].pk,
                   "runs": world["run"].pk, "task-jobs": world["job"].pk}
        assert resource in objects, f"no sample object for {{{name}}} in {template}: add one to world()"
        return str(objects[resource])

    return re.sub(r"\{(\w+)\}", value, template)


def _operations(schema: dict, methods) -> list[tuple[str, str, dict]]:
    return [(method, path, op) for path, ops in schema["paths"].items() for method, op in ops.items()
            if method in methods]


@pytest.fixture
def schema(alice) -> dict:
    return alice.get("/api/schema/?format=json").json()


def _send(client, method: str, url: str, op: dict):
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content or not content:
        return getattr(client, method)(url, {}, format="json")
    return getattr(client, method)(url, {}, format="multipart")


def test_viewers_may_not_write_anything(bob, schema, world):
    problems = []
    for method, path, op in _operations(schema, WRITE_METHODS):
        if path in VIEWER_MAY_WRITE:
            continue
        response = _send(bob, method, _fill(path, world), op)
        if response.status_code != 403:
            problems.append(f"viewer {method.upper()} {path}: {response.status_code}")
    assert not problems, "\n".join(problems)
    world["run"].refresh_from_db()
    assert world["run"].status == "queued"


def test_viewers_may_read_everything(bob, schema, world):
    problems = []
    for _method, path, _op in _operations(schema, ("get",)):
        response = bob.get(_fill(path, world))
        if response.status_code != 200:
            problems.append(f"viewer GET {path}: {response.status_code} {response.content[:200]!r}")
    assert not problems, "\n".join(problems)


def test_operators_may_write_everything(alice, schema, world):
    """An operator is never refused (403); an empty body may be a 400, never a server error."""
    problems = []
    for method, path, op in _operations(schema, WRITE_METHODS):
        response = _send(alice, method, _fill(path, world), op)
        if response.status_code == 403 or response.status_code >= 500:
            problems.append(f"operator {method.upper()} {path}: {response.status_code} {response.content[:300]!r}")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------------- CSRF


def test_session_writes_without_a_csrf_token_are_refused(operator, schema, world):
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    problems = []
    for method, path, _op in _operations(schema, WRITE_METHODS):
        if path == "/api/auth/token":
            continue  # takes no session: nothing to forge
        response = getattr(client, method)(_fill(path, world), "{}", content_type="application/json")
        body = response.json() if response.status_code == 403 else {}
        if response.status_code != 403 or "CSRF" not in body["error"]["message"]:
            problems.append(f"session {method.upper()} {path} without CSRF: {response.status_code}")
    assert not problems, "\n".join(problems)
    world["run"].refresh_from_db()
    assert world["run"].status == "queued"


def test_session_writes_with_the_csrf_token_go_through(operator, world):
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    client.get("/accounts/login/")  # sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    response = client.post(f"/api/runs/{world['run'].pk}/cancel", "{}", content_type="application/json",
                           HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200, response.content
    world["run"].refresh_from_db()
    assert world["run"].status == "cancelled"


# --------------------------------------------------------------------------------- tokens


def test_token_endpoint_gives_a_token_that_authenticates(anon, operator):
    response = anon.post("/api/auth/token", {"username": "alice", "password": "alice-pass-123"}, format="json")
    assert response.status_code == 200
    assert response.json()["is_operator"] is True
    anon.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    assert anon.get("/api/tasks").status_code == 200


def test_token_endpoint_refuses_bad_passwords_and_is_throttled(anon, operator, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
                                                          "login": "3/min"}}
    for _ in range(3):
        response = anon.post("/api/auth/token", {"username": "alice", "password": "wrong"}, format="json")
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "authorization"
    response = anon.post("/api/auth/token", {"username": "alice", "password": "alice-pass-123"}, format="json")
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert response.json()["error"]["code"] == "throttled"
