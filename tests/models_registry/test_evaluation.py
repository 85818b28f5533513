"""Evaluation: one function scores neural and algorithmic implementations alike."""

from __future__ import annotations

import pytest

from models_registry.choices import Implementation, SampleSource
from models_registry.evaluation import algorithm_evaluate, version_evaluate
from models_registry.models import PerformanceSample
from models_registry.services import model_create
from tests.factories import csv_task, trained_version

pytestmark = pytest.mark.django_db

LATENCY_KEYS = {"p50_ms_b1", "p95_ms_b1", "p99_ms_b1", "p50_ms_b256", "p95_ms_b256", "p99_ms_b256"}


def test_version_evaluation_returns_documented_fields():
    model = model_create(task=csv_task(), name="m")
    v1 = trained_version(model, measure=True)
    sample = version_evaluate(version=v1)
    assert sample.implementation == Implementation.NEURAL
    assert sample.source == SampleSource.EVALUATION
    assert 0.0 <= sample.score <= 1.0
    assert sample.metric == "accuracy"
    assert sample.latency_p50_ms > 0 and sample.latency_p95_ms >= sample.latency_p50_ms
    assert sample.latency_p95_ms_batch > 0
    assert sample.n_parameters == v1.n_parameters > 0
    assert sample.size_bytes > 0
    assert LATENCY_KEYS <= set(v1.metrics["latency"])
    assert v1.metrics["n_rows"] == model.task.n_gate and v1.metrics["split"] == "gate"
    assert sample.split == "gate"
    # The version's sealed test score, recorded for reports, with its 95 % interval.
    assert v1.test_score is not None and v1.test_ci95_low <= v1.test_score <= v1.test_ci95_high
    assert v1.metrics["test"]["n_rows"] == model.task.n_test


def test_algorithm_evaluation_is_recorded_without_version():
    task = csv_task()
    sample = algorithm_evaluate(task=task)
    assert sample.implementation == Implementation.ALGORITHMIC and sample.version is None
    assert sample.score > 0.9  # well separated blobs
    assert sample.split == "gate"
    samples = PerformanceSample.objects.filter(task=task, implementation="algorithmic")
    assert sorted(samples.values_list("split", flat=True)) == ["gate", "test"]  # the decision's and the report's
