"""Dataset versions of a task: the one write of a task's dataset after creation, and appends.

* ``dataset_version_write`` — every change of a task's dataset goes through it: the new file
  first, then, in one transaction with the task row locked, the task's file and counts and the
  new ``DatasetVersion`` row; a failed transaction removes the new file. The files of the newest
  ``PLASTICITY_DATASET_FILES_KEPT`` versions stay (each version's file holds every row up to it);
  older versions keep their row with its counts and row range (the lineage), not their file — a
  task whose data is replaced often (the gain predictor's) must not keep a copy per version.
* ``task_rows_append`` — rows from a CSV or NPZ upload, read with the task's own columns
  (``models_registry.data.append``), added at the end of the dataset; only they are split,
  every earlier row keeps its split. Idempotent per upload: the same file (its sha256) or the
  same ``Idempotency-Key`` on the same task answers the version it made (``created`` false).
* ``dataset_version_first`` — version 1, recorded inside the transaction that creates the task.
* ``version_new_rows_start`` — where the rows a model version was not trained with begin (the
  rows appended since), so a retraining run is judged on old and new rows apart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from events.payloads import DatasetAppendedPayload
from events.publisher import publish
from models_registry.choices import DatasetSource, OutputKind
from models_registry.data.append import TaskColumns, dataset_extend, parse_rows
from models_registry.data.errors import DatasetError
from models_registry.data.splits import SPLIT_NAMES
from models_registry.data.upload import UploadLimits
from models_registry.datasets import dataset_save
from models_registry.errors import RegistryError
from models_registry.implementations import task_dataset
from models_registry.models import DatasetVersion, ModelVersion, Task
from models_registry.weights import blob_delete, sha256_bytes

logger = logging.getLogger(__name__)

#: An append rebuilt on the newer dataset when another append committed first, at most this often.
APPEND_ATTEMPTS = 3
#: The longest Idempotency-Key accepted (the column's size).
IDEMPOTENCY_KEY_MAX = 200


class AppendConflict(RegistryError):
    """An append the task's current state refuses (the API answers 409): its Idempotency-Key already
    appended another file, or the task's data kept changing under it."""


class _DatasetMoved(Exception):
    """The task's dataset changed between reading it and writing the next version."""


def splits_check(splits: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The four index arrays sorted as int64, refused unless disjoint, non-empty and covering ``range(n)``."""
    missing = [name for name in SPLIT_NAMES if name not in splits]
    if missing:
        raise RegistryError(f"splits: missing {', '.join(missing)}")
    checked = {name: np.sort(np.asarray(splits[name], dtype=np.int64).reshape(-1)) for name in SPLIT_NAMES}
    empty = [name for name, index in checked.items() if not len(index)]
    if empty:
        raise RegistryError(f"splits: {', '.join(empty)} must not be empty")
    every = np.concatenate(list(checked.values()))
    if len(every) != n or not np.array_equal(np.sort(every), np.arange(n)):
        raise RegistryError(f"splits: the four index arrays must be disjoint and cover the {n} rows exactly")
    return checked


def _user(user: User | None) -> User | None:
    return user if user is not None and user.is_authenticated else None


def dataset_version_first(*, task: Task, content_sha256: str = "",
                          created_by: User | None = None) -> DatasetVersion:
    """Version 1 of a task just created (call inside the transaction that creates the row)."""
    return DatasetVersion.objects.create(
        task=task, number=1, source=DatasetSource.CREATION, file=task.dataset_file, sha256=task.dataset_sha256,
        rows_total=task.n_samples, rows_added=task.n_samples, row_start=0, row_end=task.n_samples,
        n_train=task.n_train, n_val=task.n_val, n_gate=task.n_gate, n_test=task.n_test,
        content_sha256=content_sha256, created_by=_user(created_by),
    )


@dataclass(frozen=True)
class DatasetBase:
    """What a new version was built on: the task's dataset digest and newest version number then."""

    sha256: str
    number: int


def _old_files_delete(task_id: int) -> None:
    """Remove the files of all but the newest ``PLASTICITY_DATASET_FILES_KEPT`` versions of a task."""
    kept = max(1, int(getattr(settings, "PLASTICITY_DATASET_FILES_KEPT", 5)))
    old = (DatasetVersion.objects.filter(task_id=task_id).exclude(file="").order_by("-number")
           .values_list("pk", "file")[kept:])
    for pk, name in old:
        try:
            blob_delete(name)
        except OSError:
            logger.warning("dataset version file %s could not be removed", name, exc_info=True)
            continue
        DatasetVersion.objects.filter(pk=pk).update(file="")


def dataset_version_write(
    *, task: Task, X: np.ndarray, y: np.ndarray, splits: dict[str, np.ndarray], source: str,
    row_range: tuple[int, int], content_sha256: str = "", idempotency_key: str = "",
    created_by: User | None = None, base: DatasetBase | None = None,
    on_row: Callable[[DatasetVersion], None] | None = None,
) -> DatasetVersion:
    """Write the dataset file, then the task's new file and counts and the version row, atomically.

    With ``base`` the write is refused (``_DatasetMoved``, the file removed) when the task's
    dataset is no longer the one the new rows were added to: another write committed meanwhile.
    The task row is locked first, so two writes of one task never interleave. ``on_row(version)``
    runs inside the transaction (an append publishes its event there); whatever it raises undoes
    the rows and removes the file.
    """
    checked = splits_check(splits, len(X))
    dataset_file, dataset_sha = dataset_save(X, y, checked)
    counts = {f"n_{name}": len(checked[name]) for name in SPLIT_NAMES}
    try:
        with transaction.atomic():
            current = Task.objects.select_for_update().filter(pk=task.pk).values_list("dataset_sha256", flat=True)
            if not current:
                raise RegistryError(f"task {task.slug} no longer exists")
            parent = DatasetVersion.objects.filter(task_id=task.pk).order_by("-number").first()
            if base is not None and (current[0] != base.sha256 or (parent.number if parent else 0) != base.number):
                raise _DatasetMoved
            Task.objects.filter(pk=task.pk).update(dataset_file=dataset_file, dataset_sha256=dataset_sha,
                                                   n_samples=len(X), **counts)
            version = DatasetVersion.objects.create(
                task=task, number=(parent.number if parent else 0) + 1, parent=parent, source=source,
                file=dataset_file, sha256=dataset_sha, rows_total=len(X), rows_added=row_range[1] - row_range[0],
                row_start=row_range[0], row_end=row_range[1], content_sha256=content_sha256,
                idempotency_key=idempotency_key, created_by=_user(created_by), **counts,
            )
            if on_row is not None:
                on_row(version)
            transaction.on_commit(partial(_old_files_delete, task.pk))
    except BaseException:
        blob_delete(dataset_file)
        raise
    task.dataset_file, task.dataset_sha256, task.n_samples = dataset_file, dataset_sha, len(X)
    for name, value in counts.items():
        setattr(task, name, value)
    return version


def task_columns(task: Task) -> TaskColumns:
    """The contract appended rows must meet: the task's columns, input shape, outputs and labels."""
    return TaskColumns(
        output_kind=task.output_kind, input_shape=tuple(int(d) for d in task.input_shape), n_outputs=task.n_outputs,
        feature_names=tuple(task.feature_names or ()), target_name=task.target_name,
        class_labels=tuple(str(label) for label in task.class_labels) if task.class_labels else None,
    )


def _version_of_upload(task: Task, *, content_sha256: str, idempotency_key: str) -> DatasetVersion | None:
    """The version an earlier request with this key or this file made, if any."""
    if idempotency_key:
        keyed = DatasetVersion.objects.filter(task=task, idempotency_key=idempotency_key).first()
        if keyed is not None:
            if keyed.content_sha256 != content_sha256:
                raise AppendConflict(
                    f"idempotency_key: {idempotency_key[:60]!r} already appended another file to {task.slug} "
                    f"(dataset version {keyed.number}); use a new key for new rows")
            return keyed
    return DatasetVersion.objects.filter(task=task, content_sha256=content_sha256).first()


def _limits_check(task: Task, n_new: int, limits: UploadLimits) -> None:
    total = task.n_samples + n_new
    if total > limits.max_rows:
        raise DatasetError(f"file: {task.slug} holds {task.n_samples} rows; {n_new} more would make {total}, and a "
                           f"task holds at most {limits.max_rows} (append at most {limits.max_rows - task.n_samples})")
    per_row = int(np.prod(task.input_shape))
    if total * per_row > limits.max_values:
        raise DatasetError(f"file: {total} rows of {per_row} values are {total * per_row:,} numbers; a task holds at "
                           f"most {limits.max_values:,} (append at most {limits.max_values // per_row - task.n_samples} "
                           "rows)")


def _appended_publish(version: DatasetVersion, *, added: dict[str, int]) -> None:
    publish("dataset.appended", DatasetAppendedPayload(
        task=version.task.slug, task_id=version.task_id, version_id=version.pk, number=version.number,
        rows_added=version.rows_added, rows_total=version.rows_total, added=added,
        created_by=version.created_by.get_username() if version.created_by else None,
    ))


def task_rows_append(
    *, task: Task, filename: str, content: bytes, idempotency_key: str = "",
    created_by: User | None = None, limits: UploadLimits | None = None,
) -> tuple[DatasetVersion, bool]:
    """Append the rows of a CSV or NPZ upload to ``task``: ``(version, created)``.

    A new append makes dataset version n+1 (``created`` true) and publishes
    ``dataset.appended``; the same file or the same ``idempotency_key`` again answers the
    version it made (``created`` false) without reading the file, and a key that made a version
    from another file is refused (``AppendConflict``). Rows are refused — with the row and
    column named, nothing written — unless they match the task's columns, shape and classes and
    stay within ``limits`` (per upload, and the task's rows and numbers in all). The new rows
    are split in the task's proportions, seeded by the task's split seed and the version
    number; no earlier row changes split (``dataset_extend``).
    """
    limits = limits or UploadLimits()
    idempotency_key = idempotency_key.strip()
    if len(idempotency_key) > IDEMPOTENCY_KEY_MAX:
        raise RegistryError(f"idempotency_key: at most {IDEMPOTENCY_KEY_MAX} characters; got {len(idempotency_key)}")
    content_sha256 = sha256_bytes(content)
    existing = _version_of_upload(task, content_sha256=content_sha256, idempotency_key=idempotency_key)
    if existing is not None:
        return existing, False
    rows = parse_rows(content, filename=filename, columns=task_columns(task), limits=limits)
    for _ in range(APPEND_ATTEMPTS):
        task.refresh_from_db()
        _limits_check(task, len(rows), limits)
        parent = DatasetVersion.objects.filter(task=task).order_by("-number").values_list("number", flat=True).first()
        base = DatasetBase(sha256=task.dataset_sha256, number=parent or 0)
        dataset = task_dataset(task)
        extended = dataset_extend(dataset.X, dataset.y, dataset.splits, rows,
                                  stratify=task.output_kind == OutputKind.CLASSES,
                                  seed=[task.split_seed, base.number + 1])
        try:
            version = dataset_version_write(
                task=task, X=extended.X, y=extended.y, splits=extended.splits, source=DatasetSource.APPEND,
                row_range=(len(dataset.X), len(extended.X)), content_sha256=content_sha256,
                idempotency_key=idempotency_key, created_by=created_by, base=base,
                on_row=partial(_appended_publish, added=extended.added),
            )
        except _DatasetMoved:
            continue  # another write committed first: add the rows to its dataset instead
        except IntegrityError:
            # The same file or key committed meanwhile, from a retried request racing this one.
            existing = _version_of_upload(task, content_sha256=content_sha256, idempotency_key=idempotency_key)
            if existing is None:
                raise
            return existing, False
        logger.info("task %s: dataset v%s, %s rows appended (%s), %s in all", task.slug, version.number,
                    version.rows_added, extended.added, version.rows_total)
        return version, True
    raise AppendConflict(f"file: {task.slug}'s data kept changing while the rows were added ({APPEND_ATTEMPTS} tries); "
                        "send the request again")


def version_new_rows_start(*, version: ModelVersion) -> int | None:
    """The first dataset row ``version`` was not trained with, or None when every row is old.

    Appends add rows at the end, so "new" is a row range: from the number of rows the task held
    when the version was made (``metrics["dataset_rows"]``; for versions recorded before that key,
    the first row of the appends made after the version) to the end. None too when the dataset was
    replaced since: row numbers then say nothing about what the version saw.
    """
    task = version.model.task
    later = DatasetVersion.objects.filter(task_id=task.pk, created_at__gt=version.created_at)
    if later.exclude(source=DatasetSource.APPEND).exists():
        return None
    rows = (version.metrics or {}).get("dataset_rows")
    if rows is None:
        rows = later.order_by("number").values_list("row_start", flat=True).first()
    if rows is None or int(rows) >= task.n_samples:
        return None
    return int(rows)
