"""Deterministic splits of a task's rows, four roles:

* ``train`` — what models learn from;
* ``val`` (validation) — choices *inside* a run: early stopping, candidate selection;
* ``gate`` — every decision *between* runs: promotion, triggers, the teacher, the serving floor,
  the predictor's checks;
* ``test`` — sealed: scored for every version for reporting, read by no decision.

A task fixes its splits once, when it is created, so every model version is judged on exactly
the same rows. The splits are a pure function of ``(n, y, stratify, seed, fractions)``: same
arguments, same indices, on any machine (``numpy.random.Generator`` with PCG64 is stable
across versions for ``permutation``).

Tasks created before the gate existed had three splits; ``legacy_gate_split`` divides their
old test rows into gate and test deterministically (``models_registry.datasets`` applies it
when such a dataset is read).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models_registry.data.errors import DatasetError

#: Fewer rows than this cannot give held-out splits that mean anything.
MIN_ROWS = 20
#: Stratification puts at least one row of every class in each of the four splits.
MIN_ROWS_PER_CLASS = 4
SPLIT_NAMES = ("train", "val", "gate", "test")
HELD_OUT = ("val", "gate", "test")
#: Train, validation, gate, test.
DEFAULT_FRACTIONS = (0.6, 0.1, 0.15, 0.15)



def _class_labels(y, n: int) -> np.ndarray:
    """``y`` as the 1-D array of ``n`` class labels that stratified splits need."""
    if y is None:
        raise DatasetError("stratified splits need the class labels y")
    labels = np.asarray(y)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise DatasetError(f"y must be a 1-D array of {n} class labels; got shape {labels.shape}")
    return labels

def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    if len(fractions) != len(SPLIT_NAMES):
        raise DatasetError(f"fractions must be four numbers (train, val, gate, test); got {len(fractions)}")
    values = tuple(float(f) for f in fractions)
    if min(values) <= 0 or not np.isclose(sum(values), 1.0, atol=1e-6):
        named = ", ".join(f"{name}={v}" for name, v in zip(SPLIT_NAMES, values, strict=True))
        raise DatasetError(f"fractions must be positive and add up to 1; got {named}")
    return values


def _allocate(count: int, held_out: Sequence[float]) -> list[int]:
    """Split ``count`` rows into (train, *held-out) sizes, each at least 1.

    Rounding per group (rather than flooring) keeps small classes close to the
    requested proportions; the adjustments below only matter for tiny groups.
    """
    sizes = [max(1, round(count * f)) for f in held_out]
    while count - sum(sizes) < 1:
        # Take the missing training row from the largest held-out split that can spare one.
        largest = max(range(len(sizes)), key=lambda i: (sizes[i], -i))
        if sizes[largest] <= 1:  # pragma: no cover - unreachable for count >= MIN_ROWS_PER_CLASS
            raise DatasetError(f"cannot split {count} rows {len(sizes) + 1} ways")
        sizes[largest] -= 1
    return [count - sum(sizes), *sizes]


def make_splits(
    n: int,
    *,
    y: np.ndarray | Sequence | None = None,
    stratify: bool,
    seed: int,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    class_names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Return ``{"train", "val", "gate", "test"}`` → sorted ``int64`` row indices.

    The four arrays are disjoint and together cover ``range(n)``. With
    ``stratify=True`` the rows of each class (``y``, any hashable-valued 1-D
    array) are split separately, so every class appears in every split in
    roughly the requested proportion. ``class_names[k]`` is how the user wrote class ``k``
    (for error messages).

    Raises ``DatasetError`` when ``n < 20``, when ``fractions`` is malformed,
    when ``y`` is missing or of the wrong length for stratification, or when a
    class has fewer than 4 rows (it could not appear in all four splits).
    """
    n = int(n)
    if n < MIN_ROWS:
        raise DatasetError(f"a dataset needs at least {MIN_ROWS} rows to be split; got {n}")
    held_out = _check_fractions(fractions)[1:]
    rng = np.random.default_rng(seed)

    groups: list[np.ndarray]
    if stratify:
        labels = _class_labels(y, n)
        classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        too_small = [(cls, int(c)) for cls, c in zip(classes, counts, strict=True) if c < MIN_ROWS_PER_CLASS]
        if too_small:
            def shown(cls) -> str:  # the label as the user wrote it, not its encoded index
                if class_names is not None and isinstance(cls, np.integer | int) and 0 <= int(cls) < len(class_names):
                    return repr(str(class_names[int(cls)]))
                return str(cls)

            listed = ", ".join(f"{shown(cls)} ({c} row{'s' if c != 1 else ''})" for cls, c in too_small[:10])
            raise DatasetError(
                f"every class needs at least {MIN_ROWS_PER_CLASS} rows so that it appears in the "
                f"train, validation, gate and test splits; too few rows for class {listed}"
            )
        # Classes in sorted order, rows in index order: the permutation below is the only randomness.
        groups = [np.flatnonzero(inverse == k) for k in range(len(classes))]
    else:
        groups = [np.arange(n)]

    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_NAMES}
    for rows in groups:
        shuffled = rng.permutation(rows)
        start = 0
        for name, size in zip(SPLIT_NAMES, _allocate(len(rows), held_out), strict=True):
            parts[name].append(shuffled[start:start + size])
            start += size
    return {name: np.sort(np.concatenate(chunks)).astype(np.int64) for name, chunks in parts.items()}


def legacy_gate_split(test: np.ndarray, y: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(gate, test) from a three-split dataset's old test rows, deterministically.

    For class labels (1-D integer ``y``) each class's old test rows are shuffled with a fixed
    seed and alternately assigned, gate first; otherwise the rows are shuffled and the first
    half (rounded up) is the gate. Same inputs, same halves, on any machine.
    """
    test = np.sort(np.asarray(test, dtype=np.int64))
    rng = np.random.default_rng(seed + 7919)
    labels = np.asarray(y)
    if labels.ndim == 1 and labels.dtype.kind in "iu":
        groups = [test[labels[test] == k] for k in np.unique(labels[test])]
    else:
        groups = [test]
    gate, rest = [], []
    for rows in groups:
        shuffled = rng.permutation(rows)
        gate.append(shuffled[0::2])
        rest.append(shuffled[1::2])
    return (np.sort(np.concatenate(gate)).astype(np.int64) if gate else test[:0],
            np.sort(np.concatenate(rest)).astype(np.int64) if rest else test[:0])


#: 1/φ: the additive recurrence frac(offset + i/φ) covers [0, 1) more evenly than any other step.
_GOLDEN_STEP = (5 ** 0.5 - 1) / 2


def spread_splits(
    n: int,
    *,
    y: np.ndarray | Sequence | None = None,
    stratify: bool,
    seed: int | Sequence[int],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> np.ndarray:
    """The split of each of ``n`` new rows, as an index into ``SPLIT_NAMES`` (int8, one per row).

    For rows appended to a task whose splits are fixed: unlike ``make_splits`` it takes any
    number of rows (one included) and any number per class. The rows are shuffled (within each
    class when ``stratify``: classes one after another, in sorted order); along that sequence,
    row ``i`` goes to the split whose share of [0, 1) holds ``frac(offset + i/φ)`` — a
    low-discrepancy sequence, so every stretch of it (the whole batch, each class) is divided
    in ``fractions`` to within a row or two, where rounding per class would give a small class
    one row in every split. ``seed`` (an int or a sequence of ints, e.g. the task's split seed
    and the version number) fixes the shuffle and the offset: same arguments, same splits.
    """
    n = int(n)
    cumulative = np.cumsum(_check_fractions(fractions))
    rng = np.random.default_rng(seed)
    if n <= 0:
        return np.zeros(0, dtype=np.int8)
    if stratify:
        _, inverse = np.unique(_class_labels(y, n), return_inverse=True)
        order = np.concatenate([rng.permutation(np.flatnonzero(inverse == k)) for k in range(int(inverse.max()) + 1)])
    else:
        order = rng.permutation(n)
    points = (rng.random() + np.arange(n) * _GOLDEN_STEP) % 1.0
    chosen = np.minimum(np.searchsorted(cumulative, points, side="right"), len(SPLIT_NAMES) - 1)
    assignment = np.empty(n, dtype=np.int8)
    assignment[order] = chosen
    return assignment
