"""Deterministic train/validation/gate/test splits: plain numpy, no database."""

from __future__ import annotations

import numpy as np
import pytest

from models_registry.data.errors import DatasetError
from models_registry.data.splits import legacy_gate_split, make_splits


def _check_partition(splits: dict[str, np.ndarray], n: int) -> None:
    assert set(splits) == {"train", "val", "gate", "test"}
    for idx in splits.values():
        assert idx.dtype == np.int64
        assert np.all(np.diff(idx) > 0), "indices are sorted and unique"
    together = np.concatenate(list(splits.values()))
    assert len(together) == n
    assert np.array_equal(np.sort(together), np.arange(n)), "disjoint and covering every row"


def test_unstratified_partition_and_fractions() -> None:
    splits = make_splits(1000, stratify=False, seed=3)
    _check_partition(splits, 1000)
    assert [len(splits[k]) for k in ("train", "val", "gate", "test")] == [600, 100, 150, 150]


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


def test_every_class_in_every_split_even_with_four_rows() -> None:
    y = np.array([0] * 30 + [1] * 4 + [2] * 5 + [3] * 6)
    splits = make_splits(len(y), y=y, stratify=True, seed=0)
    _check_partition(splits, len(y))
    for name, idx in splits.items():
        assert set(y[idx].tolist()) == {0, 1, 2, 3}, name


def test_custom_fractions() -> None:
    splits = make_splits(200, stratify=False, seed=0, fractions=(0.5, 0.2, 0.2, 0.1))
    assert [len(splits[k]) for k in ("train", "val", "gate", "test")] == [100, 40, 40, 20]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 19, "stratify": False}, "at least 20 rows"),
        ({"n": 40, "stratify": True}, "need the class labels"),
        ({"n": 40, "stratify": True, "y": np.zeros(39, dtype=int)}, "1-D array of 40"),
        ({"n": 40, "stratify": True, "y": np.array([0] * 37 + [1] * 3)}, r"class 1 \(3 rows\)"),
        ({"n": 40, "stratify": False, "fractions": (0.8, 0.1, 0.1)}, "four numbers"),
        ({"n": 40, "stratify": False, "fractions": (0.8, 0.2, 0.2, 0.2)}, "add up to 1"),
        ({"n": 40, "stratify": False, "fractions": (1.0, 0.0, 0.0, 0.0)}, "positive"),
    ],
)
def test_refusals(kwargs: dict, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        make_splits(seed=0, **kwargs)


def test_dataset_error_is_a_value_error() -> None:
    assert issubclass(DatasetError, ValueError)


def test_a_three_split_dataset_divides_its_old_test_rows_deterministically() -> None:
    """Tasks made before the gate split existed: their old test rows become gate and test, half each."""
    y = np.array([0] * 60 + [1] * 40)
    old_test = np.concatenate([np.arange(50, 60), np.arange(80, 100)])  # 10 of class 0, 20 of class 1
    gate, test = legacy_gate_split(old_test, y)
    assert np.array_equal(np.sort(np.concatenate([gate, test])), old_test), "exactly the old test rows"
    assert not set(gate) & set(test)
    assert (np.sum(y[gate] == 0), np.sum(y[test] == 0)) == (5, 5)  # each class halved
    assert (np.sum(y[gate] == 1), np.sum(y[test] == 1)) == (10, 10)
    again = legacy_gate_split(old_test, y)
    assert np.array_equal(again[0], gate) and np.array_equal(again[1], test)
    values = np.linspace(0, 1, 100).reshape(-1, 1)  # regression targets: not stratified, half rounded up
    gate, test = legacy_gate_split(np.arange(85, 100), values)
    assert (len(gate), len(test)) == (8, 7)
