"""The predict hot path: no database query once warm; cached tokens still honour revocation."""

from __future__ import annotations

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from models_registry.serving.choices import SwitchReason
from models_registry.serving.router import serving_router
from models_registry.serving.switching import NEURAL, serving_switch
from models_registry.serving.tracker import serving_tracker
from project.api.authentication import TokenCache, token_cache
from tests.models_registry.serving.helpers import blobs_inputs

pytestmark = pytest.mark.django_db


def _token_client(user) -> tuple[APIClient, Token]:
    token = Token.objects.create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client, token


def _predict(client, slug: str):
    return client.post(f"/api/tasks/{slug}/predict", {"inputs": blobs_inputs(1)[0]}, format="json")


@pytest.mark.parametrize("implementation", ["algorithmic", "neural"])
def test_a_warm_predict_makes_no_database_query(served_task, viewer, settings, implementation):
    task, _model, _v1, v2 = served_task
    if implementation == "neural":
        serving_switch(task=task, implementation=NEURAL, version=v2, reason=SwitchReason.OPERATOR)
    settings.PLASTICITY_SERVING_REFRESH_S = 3600.0  # the route table stays as loaded during the test
    serving_router().invalidate()
    client, _token = _token_client(viewer)
    first = _predict(client, task.slug)  # warm: route loaded, token verified, throttle counter made
    assert first.status_code == 200, first.content
    assert first.json()["implementation"] == implementation
    with CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            answer = _predict(client, task.slug)
            assert answer.status_code == 200, answer.content
            assert answer.json()["prediction_id"]  # signed, not stored: no write either
    assert len(queries) == 0, [q["sql"] for q in queries.captured_queries]
    # The rows were sampled for drift detection all the same (written by the tracker's flush).
    assert serving_tracker().pending_inputs()[task.pk].seen == 4


def test_an_uncached_token_costs_one_query_and_is_then_cached(served_task, viewer, settings):
    task = served_task[0]
    settings.PLASTICITY_SERVING_REFRESH_S = 3600.0
    client, token = _token_client(viewer)
    assert _predict(client, task.slug).status_code == 200
    token_cache.clear()
    with CaptureQueriesContext(connection) as queries:
        assert _predict(client, task.slug).status_code == 200
    assert len(queries) == 1 and "authtoken_token" in queries.captured_queries[0]["sql"]
    assert token_cache.get(token.key) is not None


def test_revoking_a_token_here_takes_effect_at_once(served_task, viewer):
    task = served_task[0]
    client, token = _token_client(viewer)
    assert _predict(client, task.slug).status_code == 200
    token.delete()
    answer = _predict(client, task.slug)
    assert answer.status_code == 401, answer.content
    assert answer.json()["error"]["code"] in {"authentication_failed", "not_authenticated"}


def test_deactivating_a_user_here_takes_effect_at_once(served_task, viewer):
    task = served_task[0]
    client, _token = _token_client(viewer)
    assert _predict(client, task.slug).status_code == 200
    viewer.is_active = False
    viewer.save(update_fields=["is_active"])
    assert _predict(client, task.slug).status_code == 401


def test_a_revocation_made_by_another_process_takes_effect_within_the_ttl(served_task, viewer, settings):
    """Another process deletes the token: no signal reaches this one, the cache entry expires.

    Timed against the cache entry's own expiry (``TokenCache`` stores ``cached at + TTL`` on the
    same monotonic clock): the entry was made before the revocation, so it expires within the
    TTL of it; every request that finished before that expiry is still accepted (the cached
    verification stands), every request sent from that expiry on is refused. No wall-clock
    bound: polling only ends the loop (its deadline is the TTL plus a generous margin)."""
    task = served_task[0]
    ttl = 1.0
    settings.PLASTICITY_TOKEN_CACHE_TTL_S = ttl
    client, token = _token_client(viewer)
    assert _predict(client, task.slug).status_code == 200  # verified against the database, then cached
    expires_at = token_cache._entries[token.key][2]  # the entry's own expiry: cached at + TTL
    # What a deletion in another process looks like from here: the row is gone, no signal ran.
    Token.objects.filter(pk=token.pk)._raw_delete(using="default")
    revoked_at = time.monotonic()
    assert expires_at <= revoked_at + ttl  # cached before the revocation: expires within the TTL of it

    answers: list[tuple[float, float, int]] = []  # (sent, answered, status), monotonic
    deadline = revoked_at + ttl + 30.0
    while time.monotonic() < deadline:
        sent = time.monotonic()
        answer = _predict(client, task.slug)
        answers.append((sent, time.monotonic(), answer.status_code))
        assert answer.status_code in {200, 401}, answer.content
        if sent >= expires_at:  # a request sent after the entry's expiry has been answered
            break
        time.sleep(0.02)
    assert answers[-1][0] >= expires_at, "the loop's deadline passed before the entry expired"

    for sent, answered, status in answers:
        if answered < expires_at:
            assert status == 200, (sent - revoked_at, answered - revoked_at)  # the entry still stands
        if sent >= expires_at:
            assert status == 401, (sent - revoked_at, answered - revoked_at)  # expired: looked up, gone
    statuses = [status for _sent, _answered, status in answers]
    assert statuses == sorted(statuses) and statuses[-1] == 401  # 200s, then only 401s
    first_refused_sent = next(sent for sent, _answered, status in answers if status == 401)
    # The first refusal came at the latest with the first request sent after the expiry, i.e. no
    # later than the TTL (after the revocation) plus one polling step.
    first_after_expiry = next(sent for sent, _answered, _status in answers if sent >= expires_at)
    assert first_refused_sent <= first_after_expiry
    assert first_refused_sent - revoked_at <= ttl + (first_after_expiry - expires_at)
    assert token_cache.get(token.key) is None


def test_ttl_zero_turns_the_cache_off(served_task, viewer, settings):
    task = served_task[0]
    settings.PLASTICITY_TOKEN_CACHE_TTL_S = 0
    client, token = _token_client(viewer)
    assert _predict(client, task.slug).status_code == 200
    assert token_cache.get(token.key) is None
    Token.objects.filter(pk=token.pk)._raw_delete(using="default")
    assert _predict(client, task.slug).status_code == 401


def test_the_token_cache_is_bounded_and_drops_the_least_recently_used(viewer, operator):
    cache = TokenCache()
    tokens = [Token(key=f"k{i}", user=viewer if i % 2 else operator) for i in range(6)]
    for token in tokens[:3]:
        cache.put(token.key, token.user, token, ttl_s=60.0, size=3)
    assert cache.get("k0") is not None  # k0 is now the most recently used
    for token in tokens[3:5]:
        cache.put(token.key, token.user, token, ttl_s=60.0, size=3)
    assert len(cache) == 3
    assert [k for k in ("k0", "k1", "k2", "k3", "k4") if cache.get(k) is not None] == ["k0", "k3", "k4"]
    cache.drop_user(operator.pk)  # k0 and k4 belong to alice
    assert [k for k in ("k0", "k3", "k4") if cache.get(k) is not None] == ["k3"]
