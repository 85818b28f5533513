"""Importable helpers for API tests (dotted paths that tasks can name)."""

from __future__ import annotations

import numpy as np


def sum_of_squares(X: np.ndarray) -> np.ndarray:
    """A labelling algorithm for generator tasks: (N, F) -> (N, 1)."""
    return (np.asarray(X, dtype=np.float64) ** 2).sum(axis=1, keepdims=True)


#: Batch sizes ``recorded_sum_of_squares`` was called with in this process: proves where labelling ran.
LABELLED: list[int] = []


def recorded_sum_of_squares(X: np.ndarray) -> np.ndarray:
    """``sum_of_squares`` that records every call (a real allowed algorithm, not a mock)."""
    LABELLED.append(len(X))
    return sum_of_squares(X)


def raises_on_call(X: np.ndarray) -> np.ndarray:
    """A labeller that loads fine and fails when called: what a broken user algorithm looks like."""
    raise RuntimeError("the integrator diverged")


def gives_nan(X: np.ndarray) -> np.ndarray:
    """A labeller whose outputs are not all finite."""
    out = sum_of_squares(X)
    out[len(out) // 2] = np.nan
    return out


#: Rows ``RecordedNearestMean.fit`` was called with in this process: proves where the algorithm was fitted.
FITTED: list[int] = []


class RecordedNearestMean:
    """A nearest-class-mean classifier that records every fit (a real allowed algorithm, not a mock)."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> RecordedNearestMean:
        FITTED.append(len(X))
        flat = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        self.classes = np.unique(y)
        self.means = np.stack([flat[y == label].mean(axis=0) for label in self.classes])
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        flat = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        distances = ((flat[:, None, :] - self.means[None, :, :]) ** 2).sum(axis=2)  # (N, classes)
        return self.classes[distances.argmin(axis=1)].astype(np.int64)
