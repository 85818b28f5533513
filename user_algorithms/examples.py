"""Example user algorithms (``algorithm_path="user_algorithms.examples.sum_of_squares"``)."""

from __future__ import annotations

import numpy as np


def sum_of_squares(X: np.ndarray) -> np.ndarray:
    """A values task's labeller: the sum of squares of each row, shape ``(N, 1)``."""
    X = np.asarray(X, dtype=np.float32).reshape(len(X), -1)
    return (X**2).sum(axis=1, keepdims=True)
