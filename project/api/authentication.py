"""Token authentication with a short-lived, bounded in-process cache: no database on the hot path.

DRF's ``TokenAuthentication`` reads the token and its user from the database on every request.
``CachedTokenAuthentication`` keeps a verified token's (user, token) pair in this process for
``PLASTICITY_TOKEN_CACHE_TTL_S`` seconds (10 by default; 0 turns the cache off), at most
``PLASTICITY_TOKEN_CACHE_SIZE`` tokens (least recently used dropped first). Entries live in a dict
of Python objects; nothing is serialised.

Revocation: deleting a token, or saving its user (deactivated, demoted, a new password), drops
that user's entries in the process that made the change at once (signals); every other web
process stops accepting the token when its entry expires, so a revocation takes effect
everywhere within the TTL. Unknown or wrong tokens are never cached: each is looked up (and the
throttle and the login rate limit bound how often).
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.signals import setting_changed
from django.db.models.signals import post_delete, post_save
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from events.env import env_float, env_int

DEFAULT_TTL_S = 10.0
DEFAULT_SIZE = 10_000


@functools.cache
def _cache_limits() -> tuple[float, int]:
    """(ttl, size), read once per process (every request asks); a settings change forgets them."""
    ttl = getattr(settings, "PLASTICITY_TOKEN_CACHE_TTL_S", None)
    size = getattr(settings, "PLASTICITY_TOKEN_CACHE_SIZE", None)
    return (float(ttl) if ttl is not None else env_float("PLASTICITY_TOKEN_CACHE_TTL_S", DEFAULT_TTL_S),
            int(size) if size is not None else env_int("PLASTICITY_TOKEN_CACHE_SIZE", DEFAULT_SIZE, minimum=1))


def _forget_limits(**_kwargs) -> None:
    _cache_limits.cache_clear()


setting_changed.connect(_forget_limits, dispatch_uid="plasticity-token-cache-limits")


class TokenCache:
    """key → (user, token, expires at): thread-safe, bounded, least recently used out first."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, tuple[Any, Token, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[Any, Token] | None:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[2] <= now:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[0], entry[1]

    def put(self, key: str, user: Any, token: Token, ttl_s: float, size: int) -> None:
        with self._lock:
            self._entries[key] = (user, token, time.monotonic() + ttl_s)
            self._entries.move_to_end(key)
            while len(self._entries) > size:
                self._entries.popitem(last=False)

    def drop_key(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def drop_user(self, user_id: Any) -> None:
        with self._lock:
            for key in [k for k, (user, _token, _exp) in self._entries.items() if user.pk == user_id]:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


token_cache = TokenCache()


class CachedTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>``, verified against the database at most once per TTL per process."""

    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        ttl, size = _cache_limits()
        if ttl > 0:
            hit = token_cache.get(key)
            if hit is not None:
                return hit
        user, token = super().authenticate_credentials(key)  # 401 for an unknown key or an inactive user
        if ttl > 0:
            token_cache.put(key, user, token, ttl, size)
        return user, token


def _token_deleted(sender, instance: Token, **kwargs) -> None:
    token_cache.drop_key(instance.key)


def _user_saved(sender, instance, **kwargs) -> None:
    token_cache.drop_user(instance.pk)


post_delete.connect(_token_deleted, sender=Token, dispatch_uid="plasticity-token-cache-delete")
post_save.connect(_token_deleted, sender=Token, dispatch_uid="plasticity-token-cache-save")
post_save.connect(_user_saved, sender=get_user_model(), dispatch_uid="plasticity-token-cache-user")
post_delete.connect(_user_saved, sender=get_user_model(), dispatch_uid="plasticity-token-cache-user-delete")
