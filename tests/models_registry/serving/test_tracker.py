"""The performance tracker: in-memory aggregates flushed as one live sample per implementation."""

from __future__ import annotations

import time

import numpy as np
import pytest

from models_registry.choices import SampleSource
from models_registry.models import PerformanceSample
from models_registry.serving.choices import SwitchReason
from models_registry.serving.router import serving_router
from models_registry.serving.switching import NEURAL, serving_switch
from models_registry.serving.tracker import PerformanceTracker, serving_tracker
from tests.models_registry.serving.helpers import blobs_inputs


def _live():
    return PerformanceSample.objects.filter(source=SampleSource.LIVE)


@pytest.mark.django_db
def test_a_flush_writes_one_row_per_implementation_with_exact_counts_and_percentiles(served_task):
    task, model, v1, v2 = served_task
    tracker = PerformanceTracker(flush_s=3600, reservoir=4096, background=False, seed=0)
    neural_ms = np.random.default_rng(0).gamma(2.0, 0.5, size=1000)
    for i, ms in enumerate(neural_ms):
        tracker.record(task_id=task.pk, implementation="neural", version_id=v2.pk, latency_ms=float(ms),
                       rows=2, error=i % 100 == 0)
    for ms in np.linspace(1.0, 3.0, 300):
        tracker.record(task_id=task.pk, implementation="algorithmic", version_id=None, latency_ms=float(ms))
    assert not _live().exists()  # nothing written per request

    written = tracker.flush()
    assert len(written) == 2 and _live().count() == 2
    neural = _live().get(implementation="neural")
    assert (neural.version_id, neural.n_requests, neural.n_errors) == (v2.pk, 1000, 10)
    p50, p95, p99 = np.percentile(neural_ms, [50, 95, 99])
    assert neural.latency_p50_ms == pytest.approx(p50)
    assert neural.latency_p95_ms == pytest.approx(p95)
    assert neural.latency_p99_ms == pytest.approx(p99)
    assert neural.extra["rows"] == 2000 and neural.throughput_per_s > 0
    algorithmic = _live().get(implementation="algorithmic")
    assert (algorithmic.version_id, algorithmic.n_requests, algorithmic.n_errors) == (None, 300, 0)
    assert algorithmic.latency_p50_ms == pytest.approx(2.0)

    assert tracker.flush() == []  # nothing new, nothing written


def test_the_latency_reservoir_is_bounded_and_unbiased():
    tracker = PerformanceTracker(flush_s=3600, reservoir=512, background=False, seed=1)
    values = np.random.default_rng(1).uniform(0.0, 100.0, size=50_000)
    for ms in values:
        tracker.record(task_id=1, implementation="neural", version_id=1, latency_ms=float(ms))
    (window,) = tracker.pending().values()
    assert window.n == 50_000 and len(window.reservoir) == 512
    p50, p95, p99 = window.percentiles()
    assert p50 == pytest.approx(50.0, abs=6.0)
    assert p95 == pytest.approx(95.0, abs=3.0)
    assert p99 == pytest.approx(99.0, abs=1.5)


def test_a_disabled_tracker_keeps_nothing():
    tracker = PerformanceTracker(enabled=False, background=False)
    tracker.record(task_id=1, implementation="neural", version_id=1, latency_ms=1.0)
    assert tracker.pending() == {}


@pytest.mark.django_db
def test_rows_of_deleted_tasks_are_dropped_not_raised(served_task):
    task, *_ = served_task
    tracker = PerformanceTracker(flush_s=3600, background=False)
    tracker.record(task_id=task.pk + 999, implementation="algorithmic", version_id=None, latency_ms=1.0)
    tracker.record(task_id=task.pk, implementation="algorithmic", version_id=None, latency_ms=1.0)
    assert [s.task_id for s in tracker.flush()] == [task.pk]


@pytest.mark.django_db
def test_predictions_through_the_api_are_aggregated_not_written(served_task, viewer, client_for):
    task, model, v1, v2 = served_task
    client = client_for(viewer)
    for _ in range(20):
        assert client.post(f"/api/tasks/{task.slug}/predict", {"inputs": blobs_inputs(3)}, format="json").status_code == 200
    serving_switch(task=task, implementation=NEURAL, version=v2, reason=SwitchReason.OPERATOR)
    serving_router().invalidate()
    for _ in range(5):
        assert client.post(f"/api/tasks/{task.slug}/predict", {"inputs": blobs_inputs(1)}, format="json").status_code == 200
    assert not _live().exists()
    serving_tracker().flush()
    rows = {(s.implementation, s.version_id): s for s in _live()}
    assert set(rows) == {("algorithmic", None), ("neural", v2.pk)}
    assert rows[("algorithmic", None)].n_requests == 20 and rows[("algorithmic", None)].extra["rows"] == 60
    assert rows[("neural", v2.pk)].n_requests == 5 and rows[("neural", v2.pk)].n_errors == 0


@pytest.mark.django_db(transaction=True)
def test_the_background_thread_flushes_periodically(served_task):
    task, *_ = served_task
    tracker = PerformanceTracker(flush_s=0.2, background=True)
    try:
        for _ in range(30):
            tracker.record(task_id=task.pk, implementation="algorithmic", version_id=None, latency_ms=1.5)
        deadline = time.monotonic() + 10
        while not _live().exists():
            assert time.monotonic() < deadline, "the tracker never flushed"
            time.sleep(0.05)
    finally:
        tracker.stop()
    (row,) = _live()
    assert row.n_requests == 30 and row.latency_p99_ms == pytest.approx(1.5)
