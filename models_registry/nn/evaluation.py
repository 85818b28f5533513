"""Scoring and latency measurement shared by every implementation.

``evaluate`` judges a neural version and an algorithmic implementation the same
way: both are a ``predict_fn(X) -> ndarray`` run on one of the task's held-out
splits with the task's metric (``models_registry.nn.metrics``). Scores are in
[0, 1], higher is better, so the promotion rule can compare any two
implementations of the same task. The result keeps each row's prediction and
every timed repeat in memory, for the paired tests of the promotion gate.

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
from models_registry.nn.metrics import Predictions, metric_score, predictions_from_raw

PredictFn = Callable[[np.ndarray], np.ndarray]

#: The metric of an output kind when a task names none (and inside runs, for validation).
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


def raw_score(output_kind: str, y_true: np.ndarray, raw: np.ndarray, metric: str | None = None) -> float:
    """Score raw implementation outputs with ``metric`` (the output kind's default when None); 0 if not finite.

    What every choice inside a run uses on the validation split: the same metric as the gate.
    """
    score = metric_score(metric or METRICS[output_kind], np.asarray(y_true), predictions_from_raw(output_kind, raw))
    return score if np.isfinite(score) else 0.0


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
    timings: dict[str, list[float]] | None = None,
) -> dict[str, float]:
    """Warm latency percentiles (milliseconds) per batch size.

    Returns ``p50_ms_b{B}``, ``p95_ms_b{B}`` and ``p99_ms_b{B}`` for each batch
    size B. Each batch size gets an equal share of ``max_seconds`` for its timed
    repeats (at least one repeat always runs), so a slow implementation cannot
    stall an evaluation. Batches are drawn from ``X_pool`` with a fixed seed.
    ``timings``, when given, receives every timed repeat (ms) under ``b{B}``.
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
        if timings is not None:
            timings[f"b{b}"] = times
        arr = np.asarray(times)
        for q in (50, 95, 99):
            # Clamp to a nanosecond so "positive" holds even for trivially fast functions.
            result[f"p{q}_ms_b{b}"] = max(float(np.percentile(arr, q)), 1e-6)
    return result


@dataclasses.dataclass
class EvaluationResult:
    """How one implementation did on one held-out split of a task.

    ``predictions`` (each row's answer) and ``timings`` (every timed repeat) stay in memory
    for the paired tests; ``as_dict`` leaves them out.
    """

    score: float
    metric: str  # a name in models_registry.nn.metrics.METRICS
    latency: dict[str, float]
    n_parameters: int | None
    size_bytes: int | None
    n_rows: int
    split: str = "gate"
    predictions: Predictions | None = dataclasses.field(default=None, repr=False)
    timings: dict[str, list[float]] = dataclasses.field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"score": self.score, "metric": self.metric, "split": self.split, "n_rows": self.n_rows,
                "latency": self.latency, "n_parameters": self.n_parameters, "size_bytes": self.size_bytes}


def evaluate(
    predict_fn: PredictFn,
    X: np.ndarray,
    y: np.ndarray,
    output_kind: str,
    *,
    metric: str | None = None,
    split: str = "gate",
    n_parameters: int | None = None,
    size_bytes: int | None = None,
    measure: bool = True,
    latency_kwargs: dict[str, Any] | None = None,
) -> EvaluationResult:
    """Score any implementation on one split with the task's ``metric``, and optionally time it.

    ``predict_fn`` may return raw outputs (a neural module: logits for classes)
    or final predictions (an algorithm: labels); for classes, a 2-D result is
    taken as logits/probabilities (argmax labels, and a class-1 score for two classes).
    """
    if output_kind not in METRICS:
        raise ValueError(f"unknown output_kind {output_kind!r}")
    metric = metric or METRICS[output_kind]
    X = np.asarray(X, dtype=np.float32)
    raw = np.asarray(predict_fn(X))
    targets = X if output_kind == RECONSTRUCTION and y is None else np.asarray(y)
    predictions = predictions_from_raw(output_kind, raw)
    score = metric_score(metric, targets, predictions)
    timings: dict[str, list[float]] = {}
    latency = measure_latency(predict_fn, X, timings=timings, **(latency_kwargs or {})) if measure else {}
    return EvaluationResult(
        score=score, metric=metric, latency=latency, n_parameters=n_parameters, size_bytes=size_bytes,
        n_rows=int(X.shape[0]), split=split, predictions=predictions, timings=timings,
    )
