"""The table baseline is tuned on the validation split once, where its evaluation runs, and every
process then fits it with the chosen settings."""

from __future__ import annotations

import numpy as np
import pytest

from models_registry.algorithms import BOOSTING_GRID, GradientBoostingClassifier
from models_registry.data.errors import ImplementationError
from models_registry.implementations import (
    algorithm_for_task,
    algorithm_params_of,
    caches_clear,
    task_dataset,
)
from models_registry.loading import load_implementation
from models_registry.models import Task
from models_registry.nn.evaluation import evaluate
from models_registry.services import task_create_from_upload
from models_registry.serving.router import route_key
from models_registry.task_algorithm import task_algorithm_evaluate
from models_registry.tuning import TUNING_MIN_VAL_ROWS, algorithm_tune

pytestmark = pytest.mark.django_db


def _imbalanced_csv(n: int, *, seed: int = 0) -> bytes:
    """Two classes, 10 % positives, a non-linear boundary with noise: no setting is perfect."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1, size=(n, 6))
    logit = 2.0 * X[:, 0] * X[:, 1] + X[:, 2] ** 2 - 3.2 + rng.normal(0, 0.8, size=n)
    y = logit > 0
    lines = ["a,b,c,d,e,f,label"] + [",".join(f"{v:.4f}" for v in row) + (",yes" if t else ",no")
                                     for row, t in zip(X, y, strict=True)]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def table():
    task = task_create_from_upload(name="rare", filename="rare.csv", content=_imbalanced_csv(2400),
                                   evaluate_algorithm=False)
    assert task.algorithm_path == "models_registry.algorithms.GradientBoostingClassifier"
    assert task.n_val >= TUNING_MIN_VAL_ROWS
    return task


def test_the_choice_is_the_best_validation_score_of_the_grid(table):
    record = algorithm_tune(task=table)
    assert record is not None and record["split"] == "val" and record["n_val"] == table.n_val
    grid = GradientBoostingClassifier.tuning_grid(table.metric, task_dataset(table).train[1])
    # A metric other than accuracy: both class weightings, each over the whole grid.
    assert table.metric != "accuracy" and len(grid) == 2 * len(BOOSTING_GRID)
    assert [t["params"] for t in record["tried"]] == grid
    best = max(record["tried"], key=lambda t: t["val"])
    assert record["params"] == best["params"]
    # Each score is the setting's own on the validation rows: refit one and score it again.
    (X_train, y_train), (X_val, y_val) = task_dataset(table).train, task_dataset(table).val
    last = record["tried"][-1]
    refit = GradientBoostingClassifier(**last["params"]).fit(X_train, y_train)
    again = evaluate(refit.predict, X_val, y_val, table.output_kind, metric=table.metric, measure=False).score
    assert again == pytest.approx(last["val"], abs=1e-6)
    # The settings differ in what they score: the grid is a real choice on this task.
    assert len({t["val"] for t in record["tried"]}) > 1
    stored = Task.objects.get(pk=table.pk)
    assert stored.algorithm_params == record and algorithm_params_of(stored) == record["params"]


def test_every_process_fits_the_algorithm_with_the_stored_settings(table):
    before = route_key(table, "algorithmic", None)
    record = algorithm_tune(task=table)
    assert record is not None
    caches_clear()  # as in another process
    fitted = algorithm_for_task(Task.objects.get(pk=table.pk))
    chosen = record["params"]
    assert (fitted.learning_rate, fitted.max_leaf_nodes) == (chosen["learning_rate"], chosen["max_leaf_nodes"])
    assert fitted.class_weight_used == chosen["class_weight"]
    # A web process that loaded the defaults before the tuning loads the tuned one again.
    assert route_key(Task.objects.get(pk=table.pk), "algorithmic", None) != before


def test_settings_tuned_for_another_path_are_not_used(table):
    algorithm_tune(task=table)
    Task.objects.filter(pk=table.pk).update(algorithm_path="models_registry.algorithms.KNNClassifier")
    moved = Task.objects.get(pk=table.pk)
    assert algorithm_params_of(moved) == {}
    assert type(algorithm_for_task(moved)).__name__ == "KNNClassifier"


def test_the_budget_bounds_the_grid_and_the_default_is_tried_first(table):
    record = algorithm_tune(task=table, budget_s=0.0)
    assert record is not None and len(record["tried"]) == 1
    assert record["params"] == GradientBoostingClassifier.tuning_grid(table.metric, task_dataset(table).train[1])[0]


def test_a_small_validation_split_keeps_the_defaults():
    task = task_create_from_upload(name="small", filename="small.csv", content=_imbalanced_csv(600),
                                   evaluate_algorithm=False)
    assert task.n_val < TUNING_MIN_VAL_ROWS
    assert algorithm_tune(task=task) is None
    assert Task.objects.get(pk=task.pk).algorithm_params == {}


def test_the_evaluation_tunes_first(table):
    sample = task_algorithm_evaluate(task=table)
    assert sample is not None
    stored = Task.objects.get(pk=table.pk)
    assert stored.algorithm_params["path"] == stored.algorithm_path
    assert sample.extra is None or "tuned" not in sample.extra  # the record lives on the task


def test_settings_need_a_class():
    with pytest.raises(ImplementationError, match="not a class"):
        load_implementation("models_registry.data.hormone_model.simulate_hormone_response", {"alpha": 1})


def test_operators_see_the_tuned_settings_in_the_api_and_the_panel(table, viewer):
    from django.test import Client
    from rest_framework.test import APIClient

    record = algorithm_tune(task=table)
    assert record is not None
    api = APIClient()
    api.force_authenticate(viewer)
    shown = api.get(f"/api/tasks/{table.slug}").json()["algorithm_evaluation"]["tuned"]
    assert shown["params"] == record["params"] and shown["split"] == "val"
    assert shown["validation_score"] == max(t["val"] for t in record["tried"]) and shown["tried"] == len(record["tried"])
    page = Client()
    page.force_login(viewer)
    html = page.get(f"/tasks/{table.slug}/").content.decode()
    assert "data-algorithm-tuned" in html and f"learning_rate {record['params']['learning_rate']}" in html
