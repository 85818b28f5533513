"""The throttles keep one number per client (GCRA): N requests per period, then one per interval."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from project.api.throttles import UserRateThrottle


def _rates(settings, **rates: str) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], **rates}}


@pytest.fixture
def clock(monkeypatch):
    """The throttles' clock, moved by hand."""
    now = [1_000_000.0]
    monkeypatch.setattr(UserRateThrottle, "timer", lambda self: now[0])
    return now


@pytest.mark.django_db
def test_a_burst_of_the_rate_then_one_request_per_interval(alice, settings, clock):
    _rates(settings, user="6/min")  # one every 10 s, six at once
    assert [alice.get("/api/ping").status_code for _ in range(6)] == [200] * 6
    refused = alice.get("/api/ping")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "throttled"
    assert int(refused["Retry-After"]) == 10
    clock[0] += 9.5
    assert alice.get("/api/ping").status_code == 429
    clock[0] += 0.5
    assert alice.get("/api/ping").status_code == 200  # one interval has passed: one more
    assert alice.get("/api/ping").status_code == 429
    clock[0] += 60
    assert [alice.get("/api/ping").status_code for _ in range(6)] == [200] * 6  # a full period: a full burst


@pytest.mark.django_db
def test_refused_requests_do_not_extend_the_wait(alice, settings, clock):
    _rates(settings, user="2/min")
    assert [alice.get("/api/ping").status_code for _ in range(2)] == [200, 200]
    for _ in range(50):
        assert alice.get("/api/ping").status_code == 429
    clock[0] += 30
    assert alice.get("/api/ping").status_code == 200


@pytest.mark.django_db
def test_the_state_per_client_is_one_number_whatever_the_rate(alice, bob, settings, clock):
    _rates(settings, user="100000/min")
    for _ in range(300):
        assert alice.get("/api/ping").status_code == 200
    stored = [cache.get(key.split(":", 2)[-1]) for key in cache._cache if "throttle_user" in key]  # type: ignore[attr-defined]
    assert len(stored) == 1 and isinstance(stored[0], float)
    assert bob.get("/api/ping").status_code == 200  # another client has its own allowance
