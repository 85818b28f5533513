"""Task creation picks an algorithm suited to the inputs and measures it before returning."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest

from models_registry.choices import Implementation, SampleSource, ScoreSplit
from models_registry.models import PerformanceSample, Task
from models_registry.selectors import algorithm_latest_sample
from models_registry.services import task_create_builtin, task_create_from_generator, task_create_from_upload
from tests.factories import blobs_csv, csv_task

pytestmark = pytest.mark.django_db

ALGORITHMS = "models_registry.algorithms."


def _npz(X: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, X=X, y=y)
    return buffer.getvalue()


def _values_csv(n: int = 200) -> bytes:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(n, 3))
    y = np.where(x[:, 0] > 0, 1.0, -1.0) + 0.1 * x[:, 1]
    lines = ["a,b,c,target", *(",".join(f"{v:.5f}" for v in [*row, t]) for row, t in zip(x, y, strict=True))]
    return ("\n".join(lines) + "\n").encode()


def _algorithm_samples(task: Task, split: str) -> int:
    return PerformanceSample.objects.filter(task=task, implementation=Implementation.ALGORITHMIC,
                                            source=SampleSource.EVALUATION, split=split).count()


def _assert_measured(task: Task) -> None:
    assert _algorithm_samples(task, ScoreSplit.GATE) == 1 and _algorithm_samples(task, ScoreSplit.TEST) == 1
    gate = algorithm_latest_sample(task=task)
    assert gate is not None and gate.split == ScoreSplit.GATE and gate.metric == task.metric
    assert gate.latency_p50_ms is not None  # serving compares latencies too
    assert not any(w.startswith("algorithm:") for w in task.warnings)
    assert task.algorithm_evaluation == Task.objects.get(pk=task.pk).algorithm_evaluation == "done"


# ------------------------------------------------------------------------ the default algorithm


def test_uploaded_tables_get_gradient_boosting():
    classes = csv_task(n=240)
    assert classes.algorithm_path == ALGORITHMS + "GradientBoostingClassifier"
    values = task_create_from_upload(name="steps", filename="steps.csv", content=_values_csv())
    assert values.output_kind == "values" and values.algorithm_path == ALGORITHMS + "GradientBoostingRegressor"


def test_uploaded_images_keep_knn_and_ridge():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(80, 1, 4, 4)).astype(np.float32)
    task = task_create_from_upload(name="images", filename="images.npz", content=_npz(images, np.arange(80) % 2))
    assert task.input_shape == [1, 4, 4] and task.algorithm_path == ALGORITHMS + "KNNClassifier"
    signals = task_create_from_upload(name="signals", filename="signals.npz", output_kind="values",
                                      content=_npz(images.reshape(80, 2, 8), images.sum(axis=(1, 2, 3))))
    assert signals.algorithm_path == ALGORITHMS + "RidgeRegressor"


def test_uploaded_reconstruction_keeps_pca():
    task = task_create_from_upload(name="recon", filename="recon.csv", output_kind="reconstruction",
                                   content=_values_csv())
    assert task.output_kind == "reconstruction" and task.algorithm_path == ALGORITHMS + "PCAReconstruction"


def test_a_named_algorithm_is_kept():
    task = task_create_from_upload(name="named", filename="named.csv", content=blobs_csv(n=120),
                                   algorithm_path=ALGORITHMS + "KNNClassifier")
    assert task.algorithm_path == ALGORITHMS + "KNNClassifier"


# -------------------------------------------------------------------- measured at creation


def test_an_uploaded_task_has_its_algorithm_measured_at_creation():
    task = csv_task(n=240)
    _assert_measured(task)
    assert algorithm_latest_sample(task=task).score > 0.9  # well separated blobs


def test_a_generator_task_has_its_algorithm_measured_at_creation():
    task = task_create_from_generator(
        name="squares", algorithm_path="tests.api.helpers.sum_of_squares",
        sampler_spec={"shape": [3], "distribution": "uniform", "low": -1, "high": 1, "n_samples": 200},
    )
    _assert_measured(task)
    assert algorithm_latest_sample(task=task).score == pytest.approx(1.0)  # it labelled the data itself


def test_a_builtin_task_has_its_algorithm_measured_at_creation():
    task = task_create_builtin(key="memory-consolidation")
    _assert_measured(task)


def test_a_failed_measurement_keeps_the_task_and_says_why(caplog):
    with caplog.at_level(logging.ERROR, logger="models_registry.task_algorithm"):
        task = task_create_from_upload(name="broken", filename="broken.csv", content=blobs_csv(n=120),
                                       algorithm_path="tests.models_registry.creation_helpers.FitFails")
    assert Task.objects.filter(pk=task.pk).exists()
    assert _algorithm_samples(task, ScoreSplit.GATE) == 0 and _algorithm_samples(task, ScoreSplit.TEST) == 0
    stored = Task.objects.get(pk=task.pk).warnings
    assert stored == task.warnings and any("could not be evaluated" in w and "cannot fit" in w for w in stored)
    assert task.algorithm_evaluation == Task.objects.get(pk=task.pk).algorithm_evaluation == "failed"
    assert "evaluating the algorithm" in caplog.text


def test_long_unnamed_rows_are_signals_and_named_columns_are_tables():
    """An NPZ of 40-sample rows is a signal (k-NN); a CSV with 40 named columns is a table (boosting)."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 40)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    signal = task_create_from_upload(name="wave", filename="wave.npz", content=_npz(X, y))
    assert signal.algorithm_path == ALGORITHMS + "KNNClassifier" and signal.feature_names == []
    header = ",".join(f"f{i}" for i in range(40)) + ",label"
    rows = [",".join(f"{v:.4f}" for v in row) + f",{t}" for row, t in zip(X, y, strict=True)]
    table = task_create_from_upload(name="wide", filename="wide.csv", content="\n".join([header, *rows]).encode())
    assert table.algorithm_path == ALGORITHMS + "GradientBoostingClassifier" and len(table.feature_names) == 40
