"""Registry services: uploads, versions, the one-active constraint, rollback."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import IntegrityError, close_old_connections, connection, transaction

from models_registry.data.errors import DatasetError
from models_registry.errors import RegistryError
from models_registry.implementations import task_dataset, version_predict_fn
from models_registry.models import ModelVersion, Task
from models_registry.selectors import version_active
from models_registry.services import (
    task_create_from_upload,
    version_activate,
    version_rollback,
)
from tests.factories import blobs_csv, csv_task, model_with_versions

pytestmark = pytest.mark.django_db


def _stored_files(folder: str) -> list[str]:
    if not default_storage.exists(folder):
        return []
    return default_storage.listdir(folder)[1]


def test_csv_upload_creates_task_with_stratified_splits():
    task = csv_task(n=300, classes=3)
    assert task.output_kind == "classes"
    assert task.class_labels == ["c0", "c1", "c2"]
    assert task.n_train + task.n_val + task.n_gate + task.n_test == 300
    dataset = task_dataset(task)
    all_idx = np.concatenate([dataset.splits[s] for s in ("train", "val", "gate", "test")])
    assert sorted(all_idx.tolist()) == list(range(300))
    for split in ("train", "val", "gate", "test"):
        y = dataset.y[dataset.splits[split]]
        shares = np.bincount(y, minlength=3) / len(y)
        np.testing.assert_allclose(shares, [1 / 3] * 3, atol=0.05)


def test_splits_are_fixed_and_deterministic():
    a = csv_task(name="a")
    b = csv_task(name="b")
    da, db = task_dataset(a), task_dataset(b)
    for split in ("train", "val", "gate", "test"):
        np.testing.assert_array_equal(da.splits[split], db.splits[split])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"a,b,label\n1,2,x\n3,4\n", "row"),
        (b"a,b,label\n1,hello,x\n" + b"1,2,y\n" * 30, "number"),
        (b"", "empty"),
        (b"a,b,label\n" + b"1,2,x\n" * 40, "class"),
        (b"a,b,label\n1,nan,x\n" + b"1,2,y\n" * 30, "finite"),
    ],
    ids=["ragged", "non-numeric", "empty", "one-class", "nan"],
)
def test_malformed_csv_is_refused_and_leaves_nothing(content, message):
    with pytest.raises(DatasetError, match=f"(?i){message}"):
        task_create_from_upload(name="bad", filename="bad.csv", content=content)
    assert not Task.objects.exists()
    assert _stored_files("datasets") == []


def test_duplicate_slug_is_refused_and_leaves_no_file():
    csv_task(name="dup")
    before = _stored_files("datasets")
    with pytest.raises(RegistryError, match="already exists"):
        task_create_from_upload(name="dup", filename="dup.csv", content=blobs_csv())
    assert _stored_files("datasets") == before


def test_a_reserved_slug_is_refused_whoever_creates_the_task():
    with pytest.raises(RegistryError, match="reserved"):
        task_create_from_upload(name="New", filename="new.csv", content=blobs_csv())
    assert not Task.objects.exists()


def test_versions_keep_lineage_and_one_is_active():
    model, (v1, v2) = model_with_versions(2)
    assert v2.parent_id == v1.pk
    assert list(model.versions.filter(is_active=True)) == [v2]


def test_database_refuses_two_active_versions():
    model, (v1, v2) = model_with_versions(2)
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(pk=v1.pk).update(is_active=True)


def test_versions_are_immutable():
    _, (v1,) = model_with_versions(1)
    v1.genome = {**v1.genome, "hidden": [99]}
    with pytest.raises(ValidationError, match="immutable"):
        v1.save()


def test_rollback_restores_previous_outputs_bit_for_bit():
    model, (v1, v2) = model_with_versions(2)
    X, _ = task_dataset(model.task).gate
    before = version_predict_fn(v1)(X)
    assert not np.array_equal(before, version_predict_fn(v2)(X))
    restored = version_rollback(model=model)
    assert restored.pk == v1.pk
    model.refresh_from_db()
    active = version_active(model=model)
    assert active.pk == v1.pk
    np.testing.assert_array_equal(version_predict_fn(active)(X), before)


def test_rollback_without_earlier_version_is_refused():
    model, _ = model_with_versions(1)
    with pytest.raises(RegistryError, match="no earlier version"):
        version_rollback(model=model)


@pytest.mark.django_db(transaction=True)
def test_one_active_version_under_concurrent_activations():
    model, versions = model_with_versions(2)
    if connection.vendor == "sqlite" and connection.settings_dict["NAME"] == ":memory:":
        pytest.skip("needs a file database shared by threads")
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def activate(version: ModelVersion) -> None:
        try:
            for _ in range(10):
                barrier.wait(timeout=10)
                version_activate(version=version, reason="race")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=activate, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert ModelVersion.objects.filter(model=model, is_active=True).count() == 1


def test_version_weights_load_into_the_genome():
    model, (v1,) = model_with_versions(1)
    from models_registry.implementations import version_module

    module = version_module(v1)
    assert isinstance(module, torch.nn.Module)
    assert sum(p.numel() for p in module.parameters()) == v1.n_parameters
