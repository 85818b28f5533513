"""Importable algorithms for the task-creation tests (dotted paths that tasks can name)."""

from __future__ import annotations

import numpy as np


class FitFails:
    """Loads fine, but cannot fit any data: what a broken user algorithm looks like at creation."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> FitFails:
        raise ValueError("this algorithm cannot fit these data")

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.zeros(len(X), dtype=np.int64)
