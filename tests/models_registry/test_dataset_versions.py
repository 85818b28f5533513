"""Dataset versions: version 1 at creation, appended rows with lineage, sealed rows that stay sealed,
refusals that change nothing, and appends that happen once per upload."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from django.core.files.storage import default_storage

from events.models import OutboxEvent
from models_registry import dataset_versions
from models_registry.data.errors import DatasetError
from models_registry.data.splits import DEFAULT_FRACTIONS, SPLIT_NAMES
from models_registry.data.upload import UploadLimits
from models_registry.dataset_versions import AppendConflict, task_rows_append
from models_registry.implementations import task_dataset
from models_registry.models import DatasetVersion, Task
from models_registry.weights import sha256_bytes
from tests.factories import blobs_csv, csv_task

pytestmark = pytest.mark.django_db

TASK_FIELDS = ("dataset_file", "dataset_sha256", "n_samples", "n_train", "n_val", "n_gate", "n_test")


def _stored_datasets() -> list[str]:
    return sorted(default_storage.listdir("datasets")[1]) if default_storage.exists("datasets") else []


def _split_of(dataset) -> dict[int, str]:
    return {int(i): name for name in SPLIT_NAMES for i in dataset.splits[name]}


def _csv(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def test_task_creation_records_version_1(operator):
    task = csv_task()
    version = DatasetVersion.objects.get(task=task)
    assert (version.number, version.source, version.parent, version.file, version.sha256) == (
        1, "creation", None, task.dataset_file, task.dataset_sha256)
    assert (version.rows_total, version.rows_added, version.row_start, version.row_end) == (240, 240, 0, 240)
    assert (version.n_train, version.n_val, version.n_gate, version.n_test) == (
        task.n_train, task.n_val, task.n_gate, task.n_test)
    assert version.content_sha256 == sha256_bytes(blobs_csv())


def test_an_append_makes_a_new_version_and_no_old_row_changes_split(operator):
    task = csv_task()
    before = task_dataset(task)
    first = DatasetVersion.objects.get(task=task)
    content = blobs_csv(n=120, seed=5)

    version, created = task_rows_append(task=task, filename="more.csv", content=content, created_by=operator)

    assert created and version.number == 2 and version.parent == first and version.source == "append"
    assert (version.rows_total, version.rows_added, version.row_start, version.row_end) == (360, 120, 240, 360)
    assert version.created_by == operator and version.content_sha256 == sha256_bytes(content)
    task.refresh_from_db()
    assert (task.dataset_file, task.dataset_sha256, task.n_samples) == (version.file, version.sha256, 360)
    assert task.n_train + task.n_val + task.n_gate + task.n_test == 360
    after = task_dataset(task)
    np.testing.assert_array_equal(after.X[:240], before.X)
    np.testing.assert_array_equal(after.y[:240], before.y)
    for name in SPLIT_NAMES:  # every old row in the same split as before, test rows included
        assert set(after.splits[name][after.splits[name] < 240].tolist()) == set(before.splits[name].tolist()), name
    assert default_storage.exists(first.file), "version 1's file stays: what earlier models were trained on"
    event = OutboxEvent.objects.get(type="dataset.appended")
    assert event.payload["number"] == 2 and event.payload["rows_added"] == 120
    assert event.payload["created_by"] == "alice" and sum(event.payload["added"].values()) == 120


def test_new_rows_are_split_in_the_tasks_proportions_by_class_and_reproducibly():
    task, twin = csv_task(n=200), csv_task(name="twin", n=200)
    content = blobs_csv(n=3000, seed=9)
    task_rows_append(task=task, filename="more.csv", content=content)
    task_rows_append(task=twin, filename="more.csv", content=content)
    dataset = task_dataset(task)
    counts = np.array([(dataset.splits[name] >= 200).sum() for name in SPLIT_NAMES])
    assert np.all(np.abs(counts - np.array(DEFAULT_FRACTIONS) * 3000) <= 3), counts
    for label in range(3):
        rows = [dataset.splits[name][(dataset.splits[name] >= 200) & (dataset.y[dataset.splits[name]] == label)]
                for name in SPLIT_NAMES]
        shares = np.array([len(r) for r in rows]) / sum(len(r) for r in rows)
        np.testing.assert_allclose(shares, DEFAULT_FRACTIONS, atol=0.01)
    # The task's split seed and the version number fix the split: the twin split its rows identically.
    for name in SPLIT_NAMES:
        np.testing.assert_array_equal(dataset.splits[name], task_dataset(twin).splits[name])


@pytest.mark.parametrize(("content", "message"), [
    (_csv("f0,f1,f2,f3,label", "1,2,3,4,c0", "1,two,3,4,c1"), "row 3, column 2 ('f1'): the value is 'two'"),
    (_csv("f0,f1,f2,f3,label", "1,2,3,4,c0", "1,2,3,4,c9"),
     "row 3, column 5 ('label'): the class label 'c9' is not one of the task's classes (c0, c1, c2)"),
    (_csv("f0,f1,f2,f3,label,extra", "1,2,3,4,c0,5"), "column 6 ('extra') is not one of the task's columns"),
    (_csv("f0,f1,f3,label", "1,2,4,c0"), "the header lacks the task's column 'f2'"),
])
def test_a_refused_append_changes_nothing(content, message):
    task = csv_task()
    fields = Task.objects.values(*TASK_FIELDS).get(pk=task.pk)
    files, before = _stored_datasets(), task_dataset(task)
    with pytest.raises(DatasetError) as info:
        task_rows_append(task=task, filename="bad.csv", content=content)
    assert message in str(info.value)
    assert Task.objects.values(*TASK_FIELDS).get(pk=task.pk) == fields
    assert DatasetVersion.objects.filter(task=task).count() == 1 and _stored_datasets() == files
    assert not OutboxEvent.objects.filter(type="dataset.appended").exists()
    after = task_dataset(Task.objects.get(pk=task.pk))
    for name in SPLIT_NAMES:
        np.testing.assert_array_equal(after.splits[name], before.splits[name])


def test_the_same_file_or_the_same_key_appends_once():
    task = csv_task()
    content, other = blobs_csv(n=60, seed=3), blobs_csv(n=60, seed=4)
    version, created = task_rows_append(task=task, filename="a.csv", content=content, idempotency_key="batch-1")
    assert created and version.idempotency_key == "batch-1"
    for kwargs in ({}, {"idempotency_key": "batch-1"}, {"idempotency_key": "another"}):  # retries: by file, by key
        again, created = task_rows_append(task=task, filename="a.csv", content=content, **kwargs)
        assert (again.pk, created) == (version.pk, False)
    task.refresh_from_db()
    assert task.n_samples == 300 and DatasetVersion.objects.filter(task=task).count() == 2
    with pytest.raises(AppendConflict, match="already appended another file"):
        task_rows_append(task=task, filename="b.csv", content=other, idempotency_key="batch-1")
    # The file the task was created from is its version 1: appending it adds nothing.
    first, created = task_rows_append(task=task, filename="blobs.csv", content=blobs_csv())
    assert (first.number, created) == (1, False)
    third, created = task_rows_append(task=task, filename="b.csv", content=other, idempotency_key="batch-2")
    assert created and third.number == 3 and third.parent == version


def test_an_appended_sealed_input_stays_in_the_sealed_split():
    task = csv_task()
    dataset = task_dataset(task)
    test_rows = dataset.splits["test"][:10]
    lines = ["f0,f1,f2,f3,label"] + [",".join(f"{v!r}" for v in dataset.X[i].tolist()) + f",c{dataset.y[i]}"
                                     for i in test_rows]
    version, _ = task_rows_append(task=task, filename="again.csv", content=_csv(*lines))
    where = _split_of(task_dataset(task))
    assert [where[i] for i in range(version.row_start, version.row_end)] == ["test"] * 10


def test_appends_are_bounded_by_the_tasks_total_rows():
    task = csv_task()
    with pytest.raises(DatasetError, match="holds 240 rows; 100 more would make 340, and a task holds at most 300"):
        task_rows_append(task=task, filename="a.csv", content=blobs_csv(n=100, seed=2),
                         limits=UploadLimits(max_rows=300))
    assert DatasetVersion.objects.filter(task=task).count() == 1


def test_an_append_racing_another_is_added_to_the_newer_dataset(monkeypatch):
    """Another append commits after this one read the dataset: this one is rebuilt on top of it."""
    task = csv_task()
    real, raced = dataset_versions.task_dataset, []

    def read_then_race(task_):
        dataset = real(task_)
        if not raced:
            raced.append(True)
            task_rows_append(task=Task.objects.get(pk=task.pk), filename="first.csv", content=blobs_csv(n=50, seed=7))
        return dataset

    monkeypatch.setattr(dataset_versions, "task_dataset", read_then_race)
    version, created = task_rows_append(task=task, filename="second.csv", content=blobs_csv(n=30, seed=8))
    assert created and version.number == 3 and (version.row_start, version.row_end) == (290, 320)
    task.refresh_from_db()
    assert task.n_samples == 320 and len(_stored_datasets()) == 3  # no file of the abandoned attempt is left


def test_the_migration_gives_every_existing_task_its_version_1():
    from django.apps import apps

    migration = importlib.import_module("models_registry.migrations.0005_datasetversion")
    task, other = csv_task(), csv_task(name="other")
    DatasetVersion.objects.filter(task=task).delete()  # a task made before dataset versions existed
    migration.forward(apps, None)
    version = DatasetVersion.objects.get(task=task)
    assert (version.number, version.source, version.file, version.sha256, version.created_at) == (
        1, "creation", task.dataset_file, task.dataset_sha256, task.created_at)
    assert (version.rows_total, version.row_end, version.n_gate, version.n_test) == (240, 240, task.n_gate, task.n_test)
    assert DatasetVersion.objects.filter(task=other).count() == 1  # a task that has its versions keeps them


def test_a_failure_inside_the_write_leaves_neither_file_nor_row(monkeypatch):
    """The new file is written before the transaction: a failure in it (here, the event) removes the file."""
    task = csv_task()
    fields, files = Task.objects.values(*TASK_FIELDS).get(pk=task.pk), _stored_datasets()

    def publish_fails(*args, **kwargs):
        raise RuntimeError("outbox unavailable")

    monkeypatch.setattr(dataset_versions, "publish", publish_fails)
    with pytest.raises(RuntimeError, match="outbox unavailable"):
        task_rows_append(task=task, filename="more.csv", content=blobs_csv(n=40, seed=6))
    assert Task.objects.values(*TASK_FIELDS).get(pk=task.pk) == fields and _stored_datasets() == files
    assert DatasetVersion.objects.filter(task=task).count() == 1


def test_only_the_newest_versions_keep_their_files(settings, django_capture_on_commit_callbacks):
    settings.PLASTICITY_DATASET_FILES_KEPT = 2
    task = csv_task()
    for seed in (5, 6, 7):
        with django_capture_on_commit_callbacks(execute=True):
            task_rows_append(task=task, filename="more.csv", content=blobs_csv(n=60, seed=seed))
    versions = list(DatasetVersion.objects.filter(task=task).order_by("number"))
    assert [v.number for v in versions] == [1, 2, 3, 4]
    assert [bool(v.file) for v in versions] == [False, False, True, True]
    assert _stored_datasets() == sorted(v.file.rsplit("/", 1)[1] for v in versions[2:])
    # The lineage stays: every version's rows and row range.
    assert [(v.row_start, v.row_end) for v in versions] == [(0, 240), (240, 300), (300, 360), (360, 420)]
    task.refresh_from_db()
    assert task.dataset_file == versions[-1].file and len(task_dataset(task).X) == 420
