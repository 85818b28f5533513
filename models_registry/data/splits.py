"""Deterministic train/validation/test splits.

A task fixes its splits once, when it is created, so every model version is
judged on exactly the same held-out rows. The splits are therefore a pure
function of ``(n, y, stratify, seed, fractions)``: same arguments, same indices,
on any machine (``numpy.random.Generator`` with PCG64 is stable across versions
for ``permutation``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models_registry.data.errors import DatasetError

#: Fewer rows than this cannot give a validation and a test split that mean anything.
MIN_ROWS = 20
#: Stratification puts at least one row of every class in each of the three splits.
MIN_ROWS_PER_CLASS = 3
SPLIT_NAMES = ("train", "val", "test")


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3:
        raise DatasetError(f"fractions must be three numbers (train, val, test); got {len(fractions)}")
    train, val, test = (float(f) for f in fractions)
    if min(train, val, test) <= 0 or not np.isclose(train + val + test, 1.0, atol=1e-6):
        raise DatasetError(
            f"fractions must be positive and add up to 1; got train={train}, val={val}, test={test}"
        )
    return train, val, test


def _allocate(count: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """Split ``count`` rows into (train, val, test) sizes, each at least 1.

    Rounding per group (rather than flooring) keeps small classes close to the
    requested proportions; the adjustments below only matter for tiny groups.
    """
    n_val = max(1, round(count * val_fraction))
    n_test = max(1, round(count * test_fraction))
    while count - n_val - n_test < 1:
        # Take the missing training row from whichever held-out split is larger.
        if n_val >= n_test and n_val > 1:
            n_val -= 1
        elif n_test > 1:
            n_test -= 1
        else:  # pragma: no cover - unreachable for count >= 3
            raise DatasetError(f"cannot split {count} rows three ways")
    return count - n_val - n_test, n_val, n_test


def make_splits(
    n: int,
    *,
    y: np.ndarray | Sequence | None = None,
    stratify: bool,
    seed: int,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
) -> dict[str, np.ndarray]:
    """Return ``{"train", "val", "test"}`` → sorted ``int64`` row indices.

    The three arrays are disjoint and together cover ``range(n)``. With
    ``stratify=True`` the rows of each class (``y``, any hashable-valued 1-D
    array) are split separately, so every class appears in every split in
    roughly the requested proportion.

    Raises ``DatasetError`` when ``n < 20``, when ``fractions`` is malformed,
    when ``y`` is missing or of the wrong length for stratification, or when a
    class has fewer than 3 rows (it could not appear in all three splits).
    """
    n = int(n)
    if n < MIN_ROWS:
        raise DatasetError(f"a dataset needs at least {MIN_ROWS} rows to be split; got {n}")
    _, val_fraction, test_fraction = _check_fractions(fractions)
    rng = np.random.default_rng(seed)

    groups: list[np.ndarray]
    if stratify:
        if y is None:
            raise DatasetError("stratified splits need the class labels y")
        labels = np.asarray(y)
        if labels.ndim != 1 or labels.shape[0] != n:
            raise DatasetError(f"y must be a 1-D array of {n} class labels; got shape {labels.shape}")
        classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        too_small = [(cls, int(c)) for cls, c in zip(classes, counts, strict=True) if c < MIN_ROWS_PER_CLASS]
        if too_small:
            listed = ", ".join(f"{cls!s} ({c} row{'s' if c != 1 else ''})" for cls, c in too_small[:10])
            raise DatasetError(
                f"every class needs at least {MIN_ROWS_PER_CLASS} rows so that it appears in the "
                f"train, validation and test splits; too few rows for class {listed}"
            )
        # Classes in sorted order, rows in index order: the permutation below is the only randomness.
        groups = [np.flatnonzero(inverse == k) for k in range(len(classes))]
    else:
        groups = [np.arange(n)]

    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_NAMES}
    for rows in groups:
        shuffled = rng.permutation(rows)
        n_train, n_val, _ = _allocate(len(rows), val_fraction, test_fraction)
        parts["train"].append(shuffled[:n_train])
        parts["val"].append(shuffled[n_train : n_train + n_val])
        parts["test"].append(shuffled[n_train + n_val :])
    return {name: np.sort(np.concatenate(chunks)).astype(np.int64) for name, chunks in parts.items()}
