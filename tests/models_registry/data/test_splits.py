"""Deterministic train/val/test splits: plain numpy, no database."""

from __future__ import annotations

import numpy as np
import pytest

from models_registry.data.errors import DatasetError
from models_registry.data.splits import make_splits


def _check_partition(splits: dict[str, np.ndarray], n: int) -> None:
    assert set(splits) == {"train", "val", "test"}
    for idx in splits.values():
        assert idx.dtype == np.int64
        assert np.all(np.diff(idx) > 0), "indices are sorted and unique"
    together = np.concatenate(list(splits.values()))
    assert len(together) == n
    assert np.array_equal(np.sort(together), np.arange(n)), "disjoint and covering every row"


def test_unstratified_partition_and_fractions() -> None:
    splits = make_splits(1000, stratify=False, seed=3)
    _check_partition(splits, 1000)
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (700, 150, 150)


def test_same_seed_same_splits_other_seed_other_splits() -> None:
    a = make_splits(500, stratify=False, seed=7)
    b = make_splits(500, stratify=False, seed=7)
    c = make_splits(500, stratify=False, seed=8)
    for name in a:
        assert np.array_equal(a[name], b[name])
    assert not np.array_equal(a["test"], c["test"])


def test_stratified_keeps_class_proportions() -> None:
    rng = np.random.default_rng(0)
    y = rng.choice(4, size=2000, p=[0.55, 0.3, 0.1, 0.05])
    splits = make_splits(len(y), y=y, stratify=True, seed=1)
    _check_partition(splits, len(y))
    overall = np.bincount(y, minlength=4) / len(y)
    for name, idx in splits.items():
        share = np.bincount(y[idx], minlength=4) / len(idx)
        assert np.allclose(share, overall, atol=0.02), name


def test_stratified_deterministic_and_accepts_text_labels() -> None:
    y = np.array(["cat", "dog", "eel"] * 20)
    a = make_splits(len(y), y=y, stratify=True, seed=5)
    b = make_splits(len(y), y=list(y), stratify=True, seed=5)
    for name in a:
        assert np.array_equal(a[name], b[name])


def test_every_class_in_every_split_even_with_three_rows() -> None:
    y = np.array([0] * 30 + [1] * 3 + [2] * 4 + [3] * 5)
    splits = make_splits(len(y), y=y, stratify=True, seed=0)
    _check_partition(splits, len(y))
    for name, idx in splits.items():
        assert set(y[idx].tolist()) == {0, 1, 2, 3}, name


def test_custom_fractions() -> None:
    splits = make_splits(200, stratify=False, seed=0, fractions=(0.5, 0.25, 0.25))
    assert [len(splits[k]) for k in ("train", "val", "test")] == [100, 50, 50]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 19, "stratify": False}, "at least 20 rows"),
        ({"n": 40, "stratify": True}, "need the class labels"),
        ({"n": 40, "stratify": True, "y": np.zeros(39, dtype=int)}, "1-D array of 40"),
        ({"n": 40, "stratify": True, "y": np.array([0] * 38 + [1] * 2)}, r"class 1 \(2 rows\)"),
        ({"n": 40, "stratify": False, "fractions": (0.8, 0.2)}, "three numbers"),
        ({"n": 40, "stratify": False, "fractions": (0.8, 0.2, 0.2)}, "add up to 1"),
        ({"n": 40, "stratify": False, "fractions": (1.0, 0.0, 0.0)}, "positive"),
    ],
)
def test_refusals(kwargs: dict, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        make_splits(seed=0, **kwargs)


def test_dataset_error_is_a_value_error() -> None:
    assert issubclass(DatasetError, ValueError)
