"""Throttles: constant-time per request, rates read from ``DEFAULT_THROTTLE_RATES`` per request.

DRF's own throttles keep, per client, the list of every request's time in the last period and
store that list in the cache on each request; at a service's rates (60,000/min) the list is
tens of thousands of floats, pickled and unpickled on every request, which cost more than a
prediction. These use the generic cell rate algorithm (GCRA) instead: per client one number,
the *theoretical arrival time* (TAT), so each request is one cache read and one write of a
float whatever the rate.

With a rate of ``N/period`` the emission interval is ``period / N``; a request is allowed when,
after adding one interval to ``max(TAT, now)``, the TAT is at most one period ahead of now. A
client may therefore send N requests at once and then one per interval, which is what "N per
period" promises, and is refused for exactly as long as it must wait (``Retry-After``).

DRF's classes also copy the rates once at import, so a test (or a settings override) could not
change them; these look them up each time, and fail loudly for a scope without a rate.
Counters live in Django's cache (per process with the default local-memory cache; shared
across processes when the deployment configures Redis as the cache).
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle as _DRFScopedRateThrottle
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.throttling import UserRateThrottle as _DRFUserRateThrottle


class _SettingsRate:
    scope: str | None

    def get_rate(self) -> str | None:
        rates = api_settings.DEFAULT_THROTTLE_RATES
        if self.scope not in rates:
            raise ImproperlyConfigured(f"no throttle rate for scope {self.scope!r} in DEFAULT_THROTTLE_RATES")
        return rates[self.scope]  # type: ignore[return-value]  # drf-stubs type rates as numbers; DRF's are "N/period" strings


class GCRAThrottle(SimpleRateThrottle):
    """DRF's ``SimpleRateThrottle`` contract (cache key, rate string, ``wait``) in O(1) per request."""

    _wait_s: float = 0.0
    num_requests: int
    duration: int

    def allow_request(self, request, view) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        now = self.timer()
        interval = self.duration / self.num_requests
        tat = self.cache.get(self.key)
        start = now if tat is None or tat < now else float(tat)
        new_tat = start + interval
        if new_tat - now > self.duration:
            self._wait_s = new_tat - now - self.duration
            return False
        self.cache.set(self.key, new_tat, int(self.duration) + 1)
        return True

    def wait(self) -> float | None:
        return self._wait_s

    def refund(self, request, view) -> None:
        """Give back the allowance one allowed request took (a request refused for its content
        should not lock its sender out)."""
        if self.rate is None:
            return
        key = self.get_cache_key(request, view)
        tat = self.cache.get(key) if key is not None else None
        if tat is not None:
            self.cache.set(key, float(tat) - self.duration / self.num_requests, int(self.duration) + 1)


class UserRateThrottle(_SettingsRate, GCRAThrottle, _DRFUserRateThrottle):
    """The general guard on every endpoint: per user, or per address when anonymous."""

    scope = "user"


class UploadRateThrottle(_SettingsRate, GCRAThrottle, _DRFUserRateThrottle):
    """Dataset uploads and generated tasks: parsing and splitting data is expensive."""

    scope = "upload"


class LoginRateThrottle(_SettingsRate, GCRAThrottle):
    """Token requests, per client address: slows down password guessing."""

    scope = "login"

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class ScopedRateThrottle(_DRFScopedRateThrottle, GCRAThrottle):
    """A view's own ``throttle_scope``, per user; the rate is read from the settings on each request.

    DRF's ``ScopedRateThrottle.allow_request`` takes the scope and rate from the view, then
    hands over to ``GCRAThrottle.allow_request`` (next in the method order).
    """

    def get_rate(self) -> str | None:
        if self.scope is None:  # no scope: no rate
            return None
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)  # type: ignore[return-value]  # drf-stubs type rates as numbers; DRF's are "N/period" strings
