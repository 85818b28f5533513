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
    samples = PerformanceSample.objects.filter(task=task, implementation="algorithmic")
    assert sorted(samples.values_list("split", flat=True)) == ["gate", "test"]  # measured at creation
    sample = algorithm_evaluate(task=task)
    assert sample.implementation == Implementation.ALGORITHMIC and sample.version is None
    assert sample.score > 0.9  # well separated blobs
    assert sample.split == "gate"
    # Each evaluation adds the decision's sample and the report's.
    assert sorted(samples.values_list("split", flat=True)) == ["gate", "gate", "test", "test"]


def test_a_task_made_before_the_gate_split_is_read_and_rescored_on_it():
    """A three-split dataset file: its old test rows become gate and test; legacy scores are re-measured."""
    import io

    import numpy as np

    from models_registry.datasets import dataset_from_bytes
    from models_registry.evaluation import versions_rescore_legacy
    from models_registry.implementations import caches_clear, task_dataset
    from models_registry.models import ModelVersion, Task
    from models_registry.weights import blob_save

    task = csv_task(n=300)
    current = task_dataset(task)
    old_test = np.sort(np.concatenate([current.splits["gate"], current.splits["test"]]))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, X=current.X, y=current.y, train=current.splits["train"], val=current.splits["val"],
                        test=old_test)
    name, sha = blob_save(buffer.getvalue(), folder="datasets", suffix=".npz")
    Task.objects.filter(pk=task.pk).update(dataset_file=name, dataset_sha256=sha)
    task.refresh_from_db()
    caches_clear()
    legacy = dataset_from_bytes(buffer.getvalue())
    assert np.array_equal(np.sort(np.concatenate([legacy.splits["gate"], legacy.splits["test"]])), old_test)
    assert abs(len(legacy.splits["gate"]) - len(legacy.splits["test"])) <= 3  # halves, per class

    model = model_create(task=task, name="m")
    version = trained_version(model)
    ModelVersion.objects.filter(pk=version.pk).update(score=0.123, score_split="legacy_test", test_score=None)
    assert versions_rescore_legacy() == 1
    version.refresh_from_db()
    assert version.score_split == "gate" and version.score != 0.123 and version.test_score is not None
    assert version.test_ci95_low <= version.test_score <= version.test_ci95_high
    assert versions_rescore_legacy() == 0  # nothing left to do


def test_changing_a_tasks_metric_re_measures_every_version_with_it(admin_client):
    from django.urls import reverse

    from models_registry.models import ModelVersion, Task

    model = model_create(task=csv_task(n=300), name="m")
    trained_version(model)
    algorithm_evaluate(task=model.task)
    task = model.task
    form = {f.name: getattr(task, f.name) for f in Task._meta.fields if f.editable and f.name != "id"}
    form = {k: v for k, v in form.items() if v is not None}
    form["metric"] = "macro_f1"
    response = admin_client.post(reverse("admin:models_registry_task_change", args=[task.pk]), form)
    assert response.status_code == 302, response.content[:800]
    task.refresh_from_db()
    assert task.metric == "macro_f1"
    assert set(ModelVersion.objects.values_list("metric", flat=True)) == {"macro_f1"}
    latest = PerformanceSample.objects.filter(task=task, version=None, split="gate").latest("id")
    assert latest.metric == "macro_f1"
