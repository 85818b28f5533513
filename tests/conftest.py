"""Shared fixtures: named actors, an isolated storage folder, in-memory layers."""

from __future__ import annotations

import os

import pytest
import torch
from django.db import connection

torch.set_num_threads(int(os.environ.get("PLASTICITY_TEST_TORCH_THREADS", "1")))


@pytest.fixture(scope="session", autouse=True)
def _serving_stopped_before_the_databases_go(django_db_setup):
    """The trackers of this process stop, and forget their exit flush, while the test database exists.

    Torn down before ``django_db_setup``: a tracker's exit flush (``atexit``) would otherwise write
    what a test left in it into a database whose tables are gone.
    """
    import atexit

    from models_registry.serving.predict import serving_runtime_reset
    from models_registry.serving.tracker import _flush_at_exit

    yield
    serving_runtime_reset()
    atexit.unregister(_flush_at_exit)


@pytest.fixture(autouse=True)
def _isolated_storage(settings, tmp_path):
    """Every test writes weights and datasets under its own folder."""
    from django.core.files.storage import default_storage, storages
    from django.utils.functional import empty

    from models_registry.implementations import caches_clear
    from models_registry.serving.predict import serving_runtime_reset
    from project.api.authentication import token_cache

    token_cache.clear()  # verified tokens are cached per process; user and token ids repeat across tests
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "models_registry.storage.AtomicFileSystemStorage",
                    "OPTIONS": {"location": str(tmp_path / "media")}},
    }
    storages._storages = {}
    default_storage._wrapped = empty
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    # The test suite's own algorithms (tests/**/helpers.py) are allowed, as a deployment adds its modules.
    settings.PLASTICITY_ALGORITHM_MODULES = [*settings.PLASTICITY_ALGORITHM_MODULES, "tests"]
    # Every event a test makes publish must match its declared payload type (events/payloads.py).
    settings.PLASTICITY_CHECK_EVENT_PAYLOADS = True
    # Shadow checks without the per-second row budget: tests of drift submit their rows at once
    # (the budget has its own test in tests/models_registry/serving/test_shadow.py).
    settings.PLASTICITY_SHADOW_MAX_ROWS_PER_S = 0
    # Each test's searches keep their Optuna studies to themselves (ids repeat across tests). The
    # distributed suite keeps the default: its studies live in the test PostgreSQL database.
    if "sqlite" in connection.settings_dict["ENGINE"]:
        settings.PLASTICITY_OPTUNA_STORAGE = f"sqlite:///{tmp_path / 'optuna.sqlite3'}"
    caches_clear()
    serving_runtime_reset()
    yield
    caches_clear()
    serving_runtime_reset()
    token_cache.clear()
    storages._storages = {}
    default_storage._wrapped = empty


@pytest.fixture
def operator(django_user_model):
    """Alice: staff, may act."""
    return django_user_model.objects.create_user("alice", password="alice-pass-123", is_staff=True)


@pytest.fixture
def viewer(django_user_model):
    """Bob: logged in, may only read."""
    return django_user_model.objects.create_user("bob", password="bob-pass-123")
