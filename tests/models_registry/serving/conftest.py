"""Serving fixtures: a fresh router/tracker/shadow per test (inline, no background threads)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from models_registry.services import model_create
from models_registry.serving.predict import serving_runtime_reset
from tests.factories import csv_task, trained_version


@pytest.fixture(autouse=True)
def _serving_runtime(settings):
    settings.PLASTICITY_SERVING_BACKGROUND = False
    settings.PLASTICITY_SERVING_REFRESH_S = 0.05
    settings.PLASTICITY_SHADOW_FRACTION = 0.0
    settings.PLASTICITY_TRACKER_FLUSH_S = 3600.0  # tests flush explicitly
    serving_runtime_reset()
    yield
    serving_runtime_reset()


@pytest.fixture
def client_for():
    """``client_for(user)``: an API client signed in as ``user`` (session), or anonymous for None."""

    def make(user=None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_login(user)
        return client

    return make


@pytest.fixture
def blobs_task():
    """A 3-class blobs task (4 features, class labels c0..c2) without neural versions."""
    return csv_task(n=240, seed=1)


@pytest.fixture
def served_task(blobs_task):
    """The blobs task with one model of two trained versions (v2 active)."""
    task = blobs_task
    model = model_create(task=task, name="m")
    v1 = trained_version(model, seed=0, epochs=8)
    v2 = trained_version(model, seed=1, epochs=8, parent=v1)
    return task, model, v1, v2
