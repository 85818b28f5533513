"""Importable algorithms for the task-creation tests (dotted paths that tasks can name)."""

from __future__ import annotations

import numpy as np

from models_registry.models import TaskCreationJob


class FitFails:
    """Loads fine, but cannot fit any data: what a broken user algorithm looks like at creation."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> FitFails:
        raise ValueError("this algorithm cannot fit these data")

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.zeros(len(X), dtype=np.int64)


def hands_the_job_over(X: np.ndarray) -> np.ndarray:
    """Labels like ``sum_of_squares`` while another worker claims the running creation job meanwhile
    (what happens when this worker looked dead: a long pause, a lost connection)."""
    TaskCreationJob.objects.filter(status="running").update(worker="other")
    return (np.asarray(X, dtype=np.float64) ** 2).sum(axis=1, keepdims=True)


class MostFrequent:
    """A weak but working classifier: always the most frequent training class (any neural model beats it)."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> MostFrequent:
        self.label = int(np.bincount(np.asarray(y, dtype=np.int64)).argmax())
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.full(len(X), self.label, dtype=np.int64)
