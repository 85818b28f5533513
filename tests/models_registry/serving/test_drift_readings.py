"""Every input drift check that compared rows leaves a reading (alarm or not), bounded per task."""

from __future__ import annotations

import io

import numpy as np
import pytest

from hormones.services import hormones_ensure
from models_registry.serving.input_drift import input_drift_check_task
from models_registry.serving.models import DriftReading, InputDrift, InputSample
from tests.factories import csv_task

pytestmark = pytest.mark.django_db

THRESHOLD, MIN_ROWS, WINDOW, COOLDOWN_S = 0.25, 200, 600, 1800.0


def _sample(task, n: int, *, seed: int, shift: float = 0.0) -> None:
    """``n`` rows from the blobs task's own distribution (its centers: ``csv_task``'s seed 0), column 2 moved."""
    centers = np.random.default_rng(0).normal(0, 3, size=(3, 4))
    rng = np.random.default_rng(seed)
    X = (centers[np.arange(n) % 3] + rng.normal(0, 1.0, size=(n, 4))).astype(np.float32)
    X[:, 2] += shift
    buffer = io.BytesIO()
    np.save(buffer, X, allow_pickle=False)
    InputSample.objects.create(task=task, rows=n, seen=n, data=buffer.getvalue())


def _check(task):
    return input_drift_check_task(task, threshold=THRESHOLD, min_rows=MIN_ROWS, window_rows=WINDOW,
                                  cooldown_s=COOLDOWN_S)


def test_a_calm_check_and_an_alarm_each_leave_a_reading_and_a_cooling_task_none():
    hormones_ensure()
    task = csv_task(n=600)
    _sample(task, WINDOW, seed=1)
    calm = _check(task)
    assert calm.report is not None and calm.drift is None
    reading = DriftReading.objects.get(task=task)
    assert not reading.drifted and reading.alarm is None and reading.rows == WINDOW
    assert reading.threshold == THRESHOLD and reading.psi_max == pytest.approx(calm.report.psi_max)
    psis = [f["psi"] for f in reading.features]
    assert psis == sorted(psis, reverse=True) and len(psis) == 4 and not any(f["moved"] for f in reading.features)

    InputSample.objects.filter(task=task).delete()
    _sample(task, WINDOW, seed=2, shift=3.0)
    alarm = _check(task)
    assert alarm.drift is not None
    latest = DriftReading.objects.filter(task=task).order_by("-id").first()
    assert latest.drifted and latest.alarm == InputDrift.objects.get(task=task)
    assert latest.features[0]["feature"] == "f2" and latest.features[0]["moved"]
    assert latest.psi_max == pytest.approx(alarm.drift.psi_max) and latest.psi_max >= THRESHOLD

    assert _check(task).skipped == "cooling down"
    assert DriftReading.objects.filter(task=task).count() == 2  # a skipped check measured nothing


def test_only_the_newest_readings_are_kept(settings):
    settings.PLASTICITY_DRIFT_READINGS_KEEP = 3
    task, other = csv_task("kept", n=600), csv_task("other", n=600)
    _sample(other, WINDOW, seed=9)
    _check(other)
    _sample(task, WINDOW, seed=1)
    made = [DriftReading.objects.filter(task=task).order_by("-id").first().pk for _ in range(5) if _check(task)]
    assert list(DriftReading.objects.filter(task=task).order_by("id").values_list("pk", flat=True)) == made[-3:]
    assert DriftReading.objects.filter(task=other).count() == 1  # another task's readings are its own
