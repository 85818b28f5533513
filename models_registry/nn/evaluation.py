"""Scoring and latency measurement shared by every implementation.

``evaluate`` judges a neural version and an algorithmic implementation the same
way: both are a ``predict_fn(X) -> ndarray`` run on the task's held-out split.
Scores are in [0, 1], higher is better, so the promotion rule can compare any
two implementations of the same task.

This module has no Django import.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from models_registry.nn.kinds import CLASSES, RECONSTRUCTION, VALUES

PredictFn = Callable[[np.ndarray], np.ndarray]

METRICS = {CLASSES: "accuracy", VALUES: "r2", RECONSTRUCTION: "reconstruction_r2"}


def _r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """R² of one set of values; a constant target scores 1 only if matched exactly."""
    ss_res = float(np.sum((y_true - y_pred) ** 2))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    if ss_tot == 0.0:
        return 1.0 if ss_res <= 1e-12 * max(1, y_true.size) else 0.0
    return 1.0 - ss_res / ss_tot


def score_predictions(output_kind: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Score predictions in [0, 1], higher is better.

    - ``classes``: accuracy, the fraction of labels in ``y_pred`` equal to ``y_true``.
    - ``values``: R² per output column (1 − SS_res / SS_tot), each clipped to [0, 1]
      so one hopeless column cannot drive the score negative, then averaged over
      columns. A 1-D ``y_true`` is one column.
    - ``reconstruction``: 1 − MSE / Var(y_true) over all elements, clipped to
      [0, 1]: the R² of the reconstruction, with the variance pooled over every
      feature (so 0 is "as good as predicting the global mean").

    Non-finite predictions score 0: a model that emits NaN must never be promoted.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    n = y_true.shape[0] if y_true.ndim else 0
    if n == 0:
        raise ValueError("cannot score an empty set")
    if y_pred.shape[0] != n:
        raise ValueError(f"y_pred has {y_pred.shape[0]} rows, y_true has {n}")

    if output_kind == CLASSES:
        return float(np.mean(y_pred.reshape(n) == y_true.reshape(n)))

    if output_kind not in (VALUES, RECONSTRUCTION):
        raise ValueError(f"unknown output_kind {output_kind!r}")
    yt = y_true.astype(np.float64).reshape(n, -1)
    yp = y_pred.astype(np.float64).reshape(n, -1)
    if yt.shape != yp.shape:
        raise ValueError(f"y_pred has shape {y_pred.shape}, y_true has {y_true.shape}")
    if not np.all(np.isfinite(yp)):
        return 0.0
    if output_kind == VALUES:
        scores = [min(max(_r2(yt[:, j], yp[:, j]), 0.0), 1.0) for j in range(yt.shape[1])]
        return float(np.mean(scores))
    return float(min(max(_r2(yt.ravel(), yp.ravel()), 0.0), 1.0))


def to_predictions(output_kind: str, raw: np.ndarray) -> np.ndarray:
    """Turn raw module outputs into predictions: argmax labels for classes, as-is otherwise."""
    raw = np.asarray(raw)
    if output_kind == CLASSES:
        return raw.argmax(axis=1).astype(np.int64)
    return raw


def torch_predict_fn(module: nn.Module) -> PredictFn:
    """Wrap a module as ``X -> raw outputs`` (float32 in, numpy out).

    The module is put in eval mode once, here, so the call itself only does
    inference (what a latency measurement should time).
    """
    module.eval()
    try:
        device = next(module.parameters()).device
    except StopIteration:
        device = torch.device("cpu")

    def predict(X: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32), device=device)
        with torch.inference_mode():
            return module(x).float().cpu().numpy()

    return predict


def _draw_batch(X_pool: np.ndarray, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """``batch_size`` rows of the pool (tiled when the pool is smaller)."""
    n = X_pool.shape[0]
    if n >= batch_size:
        idx = rng.choice(n, size=batch_size, replace=False)
    else:
        idx = np.resize(rng.permutation(n), batch_size)
    return np.ascontiguousarray(X_pool[idx])


def measure_latency(
    predict_fn: PredictFn,
    X_pool: np.ndarray,
    *,
    batch_sizes: Iterable[int] = (1, 256),
    warmup: int = 5,
    repeats: int = 50,
    max_seconds: float = 5.0,
) -> dict[str, float]:
    """Warm latency percentiles (milliseconds) per batch size.

    Returns ``p50_ms_b{B}``, ``p95_ms_b{B}`` and ``p99_ms_b{B}`` for each batch
    size B. Each batch size gets an equal share of ``max_seconds`` for its timed
    repeats (at least one repeat always runs), so a slow implementation cannot
    stall an evaluation. Batches are drawn from ``X_pool`` with a fixed seed.
    """
    X_pool = np.asarray(X_pool, dtype=np.float32)
    if X_pool.shape[0] == 0:
        raise ValueError("X_pool is empty")
    sizes = [int(b) for b in batch_sizes]
    share = max_seconds / max(1, len(sizes))
    rng = np.random.default_rng(0)
    result: dict[str, float] = {}
    for b in sizes:
        if b < 1:
            raise ValueError(f"batch size must be >= 1, got {b}")
        # A few distinct batches, cycled, so the numbers do not depend on one lucky batch.
        batches = [_draw_batch(X_pool, b, rng) for _ in range(min(4, max(1, repeats)))]
        for i in range(warmup):
            predict_fn(batches[i % len(batches)])
        times: list[float] = []
        deadline = time.perf_counter() + share
        for i in range(max(1, repeats)):
            t0 = time.perf_counter()
            predict_fn(batches[i % len(batches)])
            t1 = time.perf_counter()
            times.append((t1 - t0) * 1000.0)
            if t1 >= deadline:
                break
        arr = np.asarray(times)
        for q in (50, 95, 99):
            # Clamp to a nanosecond so "positive" holds even for trivially fast functions.
            result[f"p{q}_ms_b{b}"] = max(float(np.percentile(arr, q)), 1e-6)
    return result


@dataclasses.dataclass
class EvaluationResult:
    """How one implementation did on a task's held-out test split."""

    score: float
    metric: str  # "accuracy" | "r2" | "reconstruction_r2"
    latency: dict[str, float]
    n_parameters: int | None
    size_bytes: int | None
    n_test: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def evaluate(
    predict_fn: PredictFn,
    X_test: np.ndarray,
    y_test: np.ndarray,
    output_kind: str,
    *,
    n_parameters: int | None = None,
    size_bytes: int | None = None,
    measure: bool = True,
    latency_kwargs: dict[str, Any] | None = None,
) -> EvaluationResult:
    """Score any implementation on a test split, and optionally time it.

    ``predict_fn`` may return raw outputs (a neural module: logits for classes)
    or final predictions (an algorithm: labels); for classes, a 2-D result is
    taken as logits/probabilities and reduced with argmax.
    """
    if output_kind not in METRICS:
        raise ValueError(f"unknown output_kind {output_kind!r}")
    X_test = np.asarray(X_test, dtype=np.float32)
    raw = np.asarray(predict_fn(X_test))
    if output_kind == CLASSES and raw.ndim == 2:
        preds = to_predictions(output_kind, raw)
    else:
        preds = raw
    score = score_predictions(output_kind, np.asarray(y_test), preds)
    latency = measure_latency(predict_fn, X_test, **(latency_kwargs or {})) if measure else {}
    return EvaluationResult(
        score=score,
        metric=METRICS[output_kind],
        latency=latency,
        n_parameters=n_parameters,
        size_bytes=size_bytes,
        n_test=int(X_test.shape[0]),
    )
