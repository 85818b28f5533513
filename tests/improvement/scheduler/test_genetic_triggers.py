"""The data-growth genetic trigger sees appended rows, and names the dataset versions that grew the data."""

from __future__ import annotations

import pytest

from improvement.scheduler.genetic_triggers import GROWTH_FRACTION, data_growth_evidence
from models_registry.dataset_versions import task_rows_append
from models_registry.services import model_create
from tests.factories import blobs_csv, csv_task, version_with_score

pytestmark = pytest.mark.django_db


def test_appended_rows_fire_data_growth_with_the_versions_as_evidence():
    task = csv_task()
    model = model_create(task=task, name="m")
    version_with_score(model, 0.7)
    trained_on = task.n_train
    task_rows_append(task=task, filename="a.csv", content=blobs_csv(n=20, seed=2))
    model.task.refresh_from_db()
    assert data_growth_evidence(model) is None  # below the growth fraction
    task_rows_append(task=task, filename="b.csv", content=blobs_csv(n=60, seed=3))
    model.task.refresh_from_db()
    evidence = data_growth_evidence(model)
    assert evidence is not None and evidence["dataset_versions"] == [2, 3]
    assert evidence["trained_on"] == trained_on and evidence["now"] >= trained_on * (1 + GROWTH_FRACTION)
