"""Small requests that would expand into huge data are refused before the data is produced."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest

from models_registry.models import Task
from tests.api.test_uploads import _upload, assert_nothing_left_behind

pytestmark = pytest.mark.django_db

MIB = 2**20


def _peak_during(call):
    tracemalloc.start()
    try:
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def test_a_generator_bomb_is_refused_before_allocation(root):
    spec = {"shape": [1000], "distribution": "uniform", "n_samples": 200_000}  # 200 bytes asking for 800 MB
    response, peak = _peak_during(lambda: root.post(
        "/api/tasks", {"name": "Bomb", "algorithm_path": "user_algorithms.examples.sum_of_squares",
                       "sampler_spec": spec}, format="json"))
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "200000 inputs of 1000 values" in message and "at most 20000 inputs of this shape" in message
    assert peak < 20 * MIB, f"{peak / MIB:.0f} MiB allocated while refusing"
    assert not Task.objects.exists()


def test_an_npz_that_expands_past_the_limit_is_refused_from_its_header(alice):
    buffer = io.BytesIO()
    np.savez_compressed(buffer, X=np.zeros((21_000, 1000), dtype=np.float32), y=np.zeros(21_000))
    small = buffer.getvalue()
    assert len(small) < 1 * MIB  # compresses to almost nothing; 84 MB of float32 inside
    response, peak = _peak_during(lambda: _upload(alice, small, filename="bomb.npz"))
    assert response.status_code == 400
    assert "array 'X' has shape [21000, 1000]" in response.json()["error"]["message"]
    assert peak < 30 * MIB, f"{peak / MIB:.0f} MiB allocated while refusing"
    assert_nothing_left_behind()
