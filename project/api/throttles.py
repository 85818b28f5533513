"""Throttles whose rates are read from ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` per request.

DRF's own classes copy the rates once at import, so a test (or a settings override) could not
change them; these look them up each time, and fail loudly for a scope without a rate.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.throttling import UserRateThrottle as _DRFUserRateThrottle


class _SettingsRate:
    scope: str

    def get_rate(self) -> str | None:
        rates = api_settings.DEFAULT_THROTTLE_RATES
        if self.scope not in rates:
            raise ImproperlyConfigured(f"no throttle rate for scope {self.scope!r} in DEFAULT_THROTTLE_RATES")
        return rates[self.scope]  # type: ignore[return-value]  # drf-stubs type rates as numbers; DRF's are "N/period" strings


class UserRateThrottle(_SettingsRate, _DRFUserRateThrottle):
    """The general guard on every endpoint: per user, or per address when anonymous."""

    scope = "user"


class UploadRateThrottle(_SettingsRate, _DRFUserRateThrottle):
    """Dataset uploads and generated tasks: parsing and splitting data is expensive."""

    scope = "upload"


class LoginRateThrottle(_SettingsRate, SimpleRateThrottle):
    """Token requests, per client address: slows down password guessing."""

    scope = "login"

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
