"""Rows appended to an existing task: read with the task's own columns, then added to its dataset.

Pure numpy, no Django. ``parse_rows`` reads a CSV or NPZ upload against what the task was
created with (``TaskColumns``: column names, input shape, class labels, outputs) and refuses
anything else with a ``DatasetError`` that says where — row and column, counted as a
spreadsheet shows them for CSV (the header is row 1), 0-based for NPZ arrays — as the creation
parser does (``models_registry.data.upload``). ``dataset_extend`` adds the rows at the end of
the task's dataset and splits only them: every earlier row keeps its split.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models_registry.data.errors import DatasetError
from models_registry.data.splits import DEFAULT_FRACTIONS, SPLIT_NAMES, spread_splits
from models_registry.data.upload import (
    UploadLimits,
    _check_finite,
    _check_size,
    _check_zip,
    _column_ref,
    _csv_target,
    _label_text,
    _load_member,
    _numeric_block,
    _parse_number,
    read_csv_table,
)
from models_registry.nn.kinds import CLASSES, RECONSTRUCTION, VALUES

#: How many of a task's class labels an error message lists.
_LABELS_SHOWN = 20


@dataclass(frozen=True)
class TaskColumns:
    """What an appended row must look like: the contract the task was created with.

    ``feature_names`` are the CSV columns of the inputs (empty when the task was not made
    from a CSV: then only NPZ rows can be appended); ``class_labels[k]`` is how class ``k``
    was written (``None``: the classes are the ids 0..n_outputs-1 themselves).
    """

    output_kind: str
    input_shape: tuple[int, ...]
    n_outputs: int
    feature_names: tuple[str, ...] = ()
    target_name: str = ""
    class_labels: tuple[str, ...] | None = None

    def classes_text(self) -> str:
        if self.class_labels is None:
            return f"the ids 0 to {self.n_outputs - 1}"
        shown = ", ".join(self.class_labels[:_LABELS_SHOWN])
        return shown + (f", … ({len(self.class_labels)} in all)" if len(self.class_labels) > _LABELS_SHOWN else "")


@dataclass(frozen=True)
class NewRows:
    """Parsed rows in the task's encoding: ``X`` float32 (N, *input_shape); ``y`` int64 class ids
    (N,), float32 values (N, k), or a copy of ``X`` (reconstruction)."""

    X: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.X.shape[0])


def parse_rows(data: bytes, *, filename: str, columns: TaskColumns, limits: UploadLimits | None = None) -> NewRows:
    """Rows from a ``.csv`` or ``.npz`` upload, checked against the task's ``columns``.

    Every refusal is about the uploaded file: its ``DatasetError`` says so (``field`` "file").
    """
    limits = limits or UploadLimits()
    lower = filename.lower()
    try:
        if lower.endswith(".csv"):
            return parse_rows_csv(data, columns=columns, limits=limits)
        if lower.endswith(".npz"):
            return parse_rows_npz(data, columns=columns, limits=limits)
        raise DatasetError(f"file: expected a .csv or .npz file, got {filename!r}")
    except DatasetError as exc:
        exc.field = exc.field or "file"
        raise


# --- CSV -----------------------------------------------------------------------------------------


def parse_rows_csv(data: bytes, *, columns: TaskColumns, limits: UploadLimits) -> NewRows:
    """A header with the task's column names (any order, no others), then one row per example."""
    if not columns.feature_names:
        raise DatasetError(
            "file: this task's inputs have no column names (it was not made from a CSV); append an .npz with "
            f"arrays 'X' of shape [N, {', '.join(map(str, columns.input_shape))}] and 'y'")
    reconstruction = columns.output_kind == RECONSTRUCTION
    names, rows, lines = read_csv_table(data, limits=limits, reconstruction=reconstruction)
    expected = [*columns.feature_names, *([] if reconstruction else [columns.target_name])]
    listed = ", ".join(expected)
    for index, name in enumerate(names):
        if name not in expected:
            raise DatasetError(f"{_column_ref(index, names)} is not one of the task's columns ({listed})")
    missing = [name for name in expected if name not in names]
    if missing:
        raise DatasetError(
            f"the header lacks the task's column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(m) for m in missing)}: expected the columns {listed} (in any order)")
    X = _numeric_block(rows, [names.index(name) for name in columns.feature_names], names, lines)
    if reconstruction:
        return NewRows(X=X, y=X.copy())
    target = names.index(columns.target_name)
    if columns.output_kind == VALUES:
        _, y, _ = _csv_target(rows, target, names, lines, VALUES)
        if y.shape[1] != columns.n_outputs:  # pragma: no cover - a CSV task has one target column
            raise DatasetError(f"the task has {columns.n_outputs} outputs; a CSV row holds one target")
        return NewRows(X=X, y=y)
    return NewRows(X=X, y=_csv_class_ids(rows, target, names, lines, columns))


def _csv_class_ids(rows: list[list[str]], target: int, names: list[str], lines: list[int],
                   columns: TaskColumns) -> np.ndarray:
    """The class ids of a CSV target column, through the task's labels ('2.0' is class '2')."""
    index = {label: k for k, label in enumerate(columns.class_labels or ())}
    ids = np.empty(len(rows), dtype=np.int64)
    for r, row in enumerate(rows):
        cell = row[target].strip()
        k = index.get(cell)
        if k is None:
            number = _parse_number(cell)
            if number is not None and math.isfinite(number):
                k = index.get(_label_text(number))
        if k is None:
            what = "is empty" if not cell else f"'{cell[:40]}' is not one of the task's classes"
            raise DatasetError(
                f"row {lines[r]}, {_column_ref(target, names)}: the class label {what} ({columns.classes_text()}); "
                "appended rows cannot add a class")
        ids[r] = k
    return ids


# --- NPZ -----------------------------------------------------------------------------------------


def parse_rows_npz(data: bytes, *, columns: TaskColumns, limits: UploadLimits) -> NewRows:
    """Arrays ``X`` (N, *input_shape) and ``y`` (optional for reconstruction), as at creation."""
    _check_size(data, limits)
    _check_zip(data, limits)
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:
        raise DatasetError(f"file is not a valid .npz archive written by numpy.savez ({type(exc).__name__}: {exc})")
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DatasetError("file is a single .npy array; upload an .npz archive with arrays named 'X' and 'y'")
    reconstruction = columns.output_kind == RECONSTRUCTION
    with archive:
        keys = list(archive.files)
        missing = [k for k in ("X", "y") if k not in keys and (k == "X" or not reconstruction)]
        if missing:
            raise DatasetError(
                f"the archive must contain arrays named 'X' (inputs) and 'y' (targets); missing "
                f"{', '.join(repr(m) for m in missing)}, found {', '.join(repr(k) for k in keys) or 'nothing'}")
        x_raw = _load_member(archive, "X")
        y_raw = _load_member(archive, "y") if "y" in keys else None
    X = _npz_rows(x_raw, columns, limits)
    if reconstruction:
        if y_raw is not None and y_raw.shape != x_raw.shape:
            raise DatasetError(f"y: for a reconstruction task 'y' is optional and, if given, must have X's shape "
                               f"{list(x_raw.shape)}; it has shape {list(y_raw.shape)}")
        return NewRows(X=X, y=X.copy())
    assert y_raw is not None  # guaranteed by the 'missing' check above
    if y_raw.ndim == 0 or y_raw.shape[0] != len(X):
        raise DatasetError(f"y: must have one entry per row of 'X' ({len(X)}); it has shape {list(y_raw.shape)}")
    if columns.output_kind == CLASSES:
        return NewRows(X=X, y=_npz_class_ids(y_raw, columns))
    return NewRows(X=X, y=_npz_values(y_raw, columns))


def _npz_rows(x: np.ndarray, columns: TaskColumns, limits: UploadLimits) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise DatasetError(f"X: must hold numbers (bool, int or float); it has dtype {x.dtype}")
    if x.ndim == 1 and columns.input_shape == (1,):
        x = x[:, None]
    if x.ndim < 2 or tuple(x.shape[1:]) != columns.input_shape:
        raise DatasetError(f"X: rows have shape {list(x.shape[1:])}; the task's inputs have shape "
                           f"{list(columns.input_shape)}")
    _check_row_count(x.shape[0], limits)
    x64 = x.astype(np.float64)
    _check_finite(x64, lambda r, j: f"X row {r} (0-based), feature {j} (0-based, flattened)", "input")
    return x64.astype(np.float32)


def _npz_class_ids(y: np.ndarray, columns: TaskColumns) -> np.ndarray:
    flat = y.reshape(len(y), -1)
    if flat.shape[1] != 1:
        raise DatasetError(f"y: class labels must be one per row; 'y' has shape {list(y.shape)}")
    values = flat[:, 0]
    if values.dtype.kind in "US":
        if columns.class_labels is None:
            raise DatasetError(f"y: the task's classes are {columns.classes_text()}; 'y' holds text labels")
        return _ids_through_labels([str(v).strip() for v in values], columns)
    if values.dtype.kind not in "biuf":
        raise DatasetError(f"y: must hold numbers or text labels; it has dtype {y.dtype}")
    numbers = values.astype(np.float64)
    _check_finite(numbers[:, None], lambda r, j: f"y row {r} (0-based)", "target")
    if columns.class_labels is not None:
        return _ids_through_labels([_label_text(v) for v in numbers], columns)
    bad = np.flatnonzero((numbers != np.round(numbers)) | (numbers < 0) | (numbers >= columns.n_outputs))
    if len(bad):
        r = int(bad[0])
        raise DatasetError(f"y row {r} (0-based): class {_label_text(numbers[r])} is not one of the task's classes "
                           f"({columns.classes_text()}); appended rows cannot add a class")
    return numbers.astype(np.int64)


def _ids_through_labels(labels: Sequence[str], columns: TaskColumns) -> np.ndarray:
    index = {label: k for k, label in enumerate(columns.class_labels or ())}
    ids = np.empty(len(labels), dtype=np.int64)
    for r, label in enumerate(labels):
        k = index.get(label)
        if k is None:
            raise DatasetError(f"y row {r} (0-based): the class label '{label[:40]}' is not one of the task's classes "
                               f"({columns.classes_text()}); appended rows cannot add a class")
        ids[r] = k
    return ids


def _npz_values(y: np.ndarray, columns: TaskColumns) -> np.ndarray:
    if y.dtype.kind not in "biuf":
        raise DatasetError(f"y: a regression ('values') target must hold numbers; it has dtype {y.dtype}")
    flat = y.astype(np.float64).reshape(len(y), -1)
    if flat.shape[1] != columns.n_outputs:
        raise DatasetError(f"y: {flat.shape[1]} value(s) per row; the task has {columns.n_outputs} output(s)")
    _check_finite(flat, lambda r, j: f"y row {r} (0-based)" + (f", column {j}" if flat.shape[1] > 1 else ""),
                  "target")
    return flat.astype(np.float32)


def _check_row_count(n: int, limits: UploadLimits) -> None:
    if n > limits.max_rows:
        raise DatasetError(f"too many rows: at most {limits.max_rows} data rows are accepted")
    if n < 1:
        raise DatasetError("X: no rows to append")


# --- merging ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtendedDataset:
    """The dataset with the new rows at the end, and where the new rows went.

    ``added[name]`` counts the new rows in each split; ``pinned`` counts the new rows whose
    input was already in the dataset (they went to that input's split, see ``dataset_extend``).
    """

    X: np.ndarray
    y: np.ndarray
    splits: dict[str, np.ndarray]
    added: dict[str, int]
    pinned: int


def dataset_extend(
    X: np.ndarray, y: np.ndarray, splits: dict[str, np.ndarray], new: NewRows, *, stratify: bool,
    seed: int | Sequence[int], fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> ExtendedDataset:
    """Append ``new`` after the rows of (``X``, ``y``) and split only the new rows.

    Every old row keeps its index and its split. A new row whose input equals an input already
    in the dataset goes to that input's split (the most sealed one — test, gate, validation,
    train — if the dataset holds it in several), so a sealed test input can never come back
    as a training row; equal inputs among the new rows go to one split together. The other
    new rows are split in ``fractions`` by ``spread_splits`` (stratified by class when
    ``stratify``), deterministically from ``seed``.
    """
    n_old, n_new = len(X), len(new)
    y_new = np.asarray(new.y).astype(y.dtype, copy=False)
    if y_new.shape[1:] != y.shape[1:]:
        raise DatasetError(f"y: new targets have shape {list(y_new.shape[1:])} per row, the task's "
                           f"{list(y.shape[1:])}")
    split_of_old = np.empty(n_old, dtype=np.int8)
    for k, name in enumerate(SPLIT_NAMES):
        split_of_old[splits[name]] = k
    # Group equal inputs, old and new together; a group's split is its most sealed old row's.
    _, group = np.unique(np.concatenate([_row_keys(X), _row_keys(new.X)]), return_inverse=True)
    group = group.reshape(-1)
    group_split = np.full(int(group.max()) + 1 if len(group) else 0, -1, dtype=np.int8)
    np.maximum.at(group_split, group[:n_old], split_of_old)
    new_group = group[n_old:]
    assignment = group_split[new_group]
    free = np.flatnonzero(assignment < 0)
    if len(free):
        _, first, inverse = np.unique(new_group[free], return_index=True, return_inverse=True)
        representatives = free[first]
        spread = spread_splits(len(representatives), y=y_new[representatives] if stratify else None,
                               stratify=stratify, seed=seed, fractions=fractions)
        assignment[free] = spread[inverse.reshape(-1)]
    extended = {
        name: np.sort(np.concatenate([np.asarray(splits[name], dtype=np.int64),
                                      n_old + np.flatnonzero(assignment == k)])).astype(np.int64)
        for k, name in enumerate(SPLIT_NAMES)
    }
    return ExtendedDataset(
        X=np.concatenate([np.asarray(X, dtype=np.float32), new.X.astype(np.float32, copy=False)]),
        y=np.concatenate([y, y_new]), splits=extended,
        added={name: int((assignment == k).sum()) for k, name in enumerate(SPLIT_NAMES)},
        pinned=n_new - len(free),
    )


def _row_keys(X: np.ndarray) -> np.ndarray:
    """One opaque value per row, equal exactly when the rows' float32 inputs are (0.0 == -0.0)."""
    flat = np.ascontiguousarray(np.asarray(X, dtype=np.float32).reshape(len(X), -1)) + np.float32(0.0)
    return flat.view(np.dtype((np.void, flat.dtype.itemsize * flat.shape[1]))).reshape(-1)
