"""Appended rows, without a database: read with the task's columns, and split without moving old rows."""

from __future__ import annotations

import io

import numpy as np
import pytest

from models_registry.data.append import NewRows, TaskColumns, dataset_extend, parse_rows
from models_registry.data.errors import DatasetError
from models_registry.data.splits import DEFAULT_FRACTIONS, SPLIT_NAMES, make_splits, spread_splits
from models_registry.data.upload import UploadLimits

BLOBS = TaskColumns(output_kind="classes", input_shape=(3,), n_outputs=3, feature_names=("a", "b", "c"),
                    target_name="label", class_labels=("c0", "c1", "c2"))
NUMERIC_LABELS = TaskColumns(output_kind="classes", input_shape=(2,), n_outputs=3, feature_names=("x", "z"),
                             target_name="y", class_labels=("1", "2", "10"))
REGRESSION = TaskColumns(output_kind="values", input_shape=(2,), n_outputs=1, feature_names=("x", "z"),
                         target_name="t")
IMAGES = TaskColumns(output_kind="classes", input_shape=(1, 2, 2), n_outputs=10)  # ids 0..9, no column names


def _csv(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _refused(content: bytes, columns: TaskColumns, filename: str = "rows.csv") -> str:
    with pytest.raises(DatasetError) as info:
        parse_rows(content, filename=filename, columns=columns)
    return str(info.value)


# ------------------------------------------------------------------------------------ CSV


def test_csv_rows_are_read_by_column_name_and_labels_mapped_through_the_tasks():
    rows = parse_rows(_csv("label,c,a,b", "c2,3,1,2", "c0,6,4,5"), filename="more.CSV", columns=BLOBS)
    np.testing.assert_array_equal(rows.X, np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32))
    np.testing.assert_array_equal(rows.y, [2, 0])
    assert rows.X.dtype == np.float32 and rows.y.dtype == np.int64
    # Numeric labels keep the task's classes: '10.0' is class '10', '2' is class '2'.
    rows = parse_rows(_csv("x,z,y", "0,0,10.0", "1,1,2"), filename="n.csv", columns=NUMERIC_LABELS)
    np.testing.assert_array_equal(rows.y, [2, 1])
    values = parse_rows(_csv("x,z,t", "0,1,0.5"), filename="v.csv", columns=REGRESSION)
    assert values.y.shape == (1, 1) and values.y.dtype == np.float32


def test_csv_refusals_name_the_row_and_the_column():
    assert "row 3, column 2 ('b'): the value is 'oops', not a number" in _refused(
        _csv("a,b,c,label", "1,2,3,c0", "1,oops,3,c1"), BLOBS)
    message = _refused(_csv("a,b,c,label", "1,2,3,c0", "1,2,3,c1", "1,2,3,c7"), BLOBS)
    assert "row 4, column 4 ('label'): the class label 'c7' is not one of the task's classes (c0, c1, c2)" in message
    assert "row 2, column 4 ('label'): the class label is empty" in _refused(_csv("a,b,c,label", "1,2,3,"), BLOBS)
    assert "row 2, column 1 ('a'): input value inf" in _refused(_csv("a,b,c,label", "inf,2,3,c0"), BLOBS)
    assert "row 3 has 3 fields, expected 4" in _refused(_csv("a,b,c,label", "1,2,3,c0", "1,2,3"), BLOBS)
    assert "row 2, column 3 ('t'): target 'x' is not a number" in _refused(_csv("x,z,t", "1,2,x"), REGRESSION)


def test_csv_header_must_hold_the_tasks_columns_and_no_others():
    assert "column 5 ('extra') is not one of the task's columns (a, b, c, label)" in _refused(
        _csv("a,b,c,label,extra", "1,2,3,c0,9"), BLOBS)
    assert "the header lacks the task's column 'b'" in _refused(_csv("a,c,label", "1,3,c0"), BLOBS)
    assert "lacks the task's column 'label'" in _refused(_csv("a,b,c", "1,2,3"), BLOBS)
    assert "header but no data rows" in _refused(_csv("a,b,c,label"), BLOBS)
    assert "no column names" in _refused(_csv("x0,x1,x2,x3,y", "1,2,3,4,0"), IMAGES)
    assert "expected a .csv or .npz file" in _refused(b"a,b", BLOBS, filename="rows.xlsx")


def test_csv_rows_are_bounded_by_the_upload_limits():
    content = _csv("a,b,c,label", *["1,2,3,c0"] * 6)
    with pytest.raises(DatasetError, match="too many rows: at most 5"):
        parse_rows(content, filename="r.csv", columns=BLOBS, limits=UploadLimits(max_rows=5))
    with pytest.raises(DatasetError, match="limit is"):
        parse_rows(content, filename="r.csv", columns=BLOBS, limits=UploadLimits(max_bytes=20))


# ------------------------------------------------------------------------------------ NPZ


def test_npz_rows_need_the_tasks_input_shape_and_classes():
    X = np.zeros((3, 1, 2, 2))
    rows = parse_rows(_npz(X=X, y=np.array([0, 9, 4])), filename="r.npz", columns=IMAGES)
    assert rows.X.shape == (3, 1, 2, 2) and rows.y.tolist() == [0, 9, 4]
    assert "X: rows have shape [1, 4]; the task's inputs have shape [1, 2, 2]" in _refused(
        _npz(X=np.zeros((3, 1, 4)), y=np.zeros(3)), IMAGES, "r.npz")
    assert "y row 1 (0-based): class 12 is not one of the task's classes (the ids 0 to 9)" in _refused(
        _npz(X=X, y=np.array([0, 12, 1])), IMAGES, "r.npz")
    assert "'y' holds text labels" in _refused(_npz(X=X, y=np.array(["a", "b", "c"])), IMAGES, "r.npz")
    assert "X row 2 (0-based), feature 3 (0-based, flattened): input value nan" in _refused(
        _npz(X=np.array([[[[0, 0], [0, 0]]]] * 2 + [[[[0, 0], [0, np.nan]]]]), y=np.zeros(3)), IMAGES, "r.npz")
    assert "missing 'y'" in _refused(_npz(X=X), IMAGES, "r.npz")
    labelled = parse_rows(_npz(X=np.zeros((2, 2)), y=np.array(["10", "1"])), filename="r.npz", columns=NUMERIC_LABELS)
    assert labelled.y.tolist() == [2, 0]
    assert "the class label '3' is not one of the task's classes (1, 2, 10)" in _refused(
        _npz(X=np.zeros((2, 2)), y=np.array([1, 3])), NUMERIC_LABELS, "r.npz")
    assert "y: 2 value(s) per row; the task has 1 output(s)" in _refused(
        _npz(X=np.zeros((2, 2)), y=np.zeros((2, 2))), REGRESSION, "r.npz")


# ------------------------------------------------------------------------------- splitting


def test_spread_splits_keeps_the_proportions_for_any_batch():
    for n in (1, 7, 40, 1000, 5003):
        counts = np.bincount(spread_splits(n, stratify=False, seed=[3, n]), minlength=4)
        assert counts.sum() == n
        assert np.all(np.abs(counts - np.array(DEFAULT_FRACTIONS) * n) <= 2), (n, counts)
    y = np.arange(2000) % 7
    assignment = spread_splits(len(y), y=y, stratify=True, seed=[0, 2])
    for label in range(7):  # every class in proportion, however small its share
        counts = np.bincount(assignment[y == label], minlength=4)
        assert np.all(np.abs(counts - np.array(DEFAULT_FRACTIONS) * counts.sum()) <= 2), (label, counts)
    np.testing.assert_array_equal(assignment, spread_splits(len(y), y=y, stratify=True, seed=[0, 2]))
    assert not np.array_equal(assignment, spread_splits(len(y), y=y, stratify=True, seed=[0, 3]))


def test_dataset_extend_splits_only_the_new_rows_and_never_moves_an_old_one():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(200, 3)).astype(np.float32), np.arange(200) % 3
    splits = make_splits(200, y=y, stratify=True, seed=0)
    new = NewRows(X=rng.normal(size=(1000, 3)).astype(np.float32), y=np.arange(1000) % 3)
    extended = dataset_extend(X, y, splits, new, stratify=True, seed=[0, 2])
    assert len(extended.X) == 1200 and extended.pinned == 0
    np.testing.assert_array_equal(extended.X[:200], X)
    for name in SPLIT_NAMES:
        old, grown = splits[name], extended.splits[name]
        np.testing.assert_array_equal(grown[grown < 200], old)  # the same old rows, in the same split
    added = np.array([extended.added[name] for name in SPLIT_NAMES])
    assert added.sum() == 1000 and np.all(np.abs(added - np.array(DEFAULT_FRACTIONS) * 1000) <= 2)


def test_an_appended_input_already_in_the_dataset_goes_to_that_inputs_split():
    """A sealed test input sent again is a test row again, never a training row."""
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(100, 2)).astype(np.float32), np.arange(100) % 2
    splits = make_splits(100, y=y, stratify=True, seed=0)
    test_rows, train_rows = splits["test"][:5], splits["train"][:3]
    repeated = np.concatenate([X[test_rows], X[train_rows]])
    fresh = rng.normal(size=(2, 2)).astype(np.float32)
    new = NewRows(X=np.concatenate([repeated, fresh, fresh]), y=np.zeros(12, dtype=np.int64))
    extended = dataset_extend(X, y, splits, new, stratify=True, seed=[0, 2])
    where = {int(i): name for name in SPLIT_NAMES for i in extended.splits[name]}
    assert [where[100 + i] for i in range(5)] == ["test"] * 5
    assert [where[105 + i] for i in range(3)] == ["train"] * 3
    assert where[108] == where[110] and where[109] == where[111]  # equal new inputs stay together
    assert extended.pinned == 8
