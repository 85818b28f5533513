"""Task metrics: one score in [0, 1], higher is better, chosen per task at creation. No Django import.

======================  ===============  =====================================================  ==========
metric                  output kind      score                                                  paired test
======================  ===============  =====================================================  ==========
``accuracy``            classes          fraction of rows whose label is right                  McNemar
``balanced_accuracy``   classes          mean over classes of the recall (chance = 1/classes)   bootstrap
``macro_f1``            classes          mean over classes of F1                                bootstrap
``roc_auc``             classes (2)      area under the ROC curve of the class-1 score          bootstrap
``r2``                  values           R² per output, clipped to [0, 1], averaged             bootstrap
``mae_skill``           values           1 − MAE / MAE of predicting the median, clipped        bootstrap
``reconstruction_r2``   reconstruction   1 − MSE / variance, pooled over features, clipped      bootstrap
======================  ===============  =====================================================  ==========

A score of 0.75 (the training trigger's default) means: 75 % of rows right (accuracy); a mean
recall of 75 % over the classes (balanced accuracy: a majority-class guesser on two classes
scores 0.5); a mean F1 of 0.75; a 75 % chance that a random positive row scores above a
random negative one (ROC AUC: 0.5 is chance); 75 % of the variance explained (R²); a mean
absolute error a quarter of the median predictor's (MAE skill).

Non-finite predictions score 0: a model that emits NaN must never be promoted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from models_registry.nn.kinds import CLASSES, RECONSTRUCTION, VALUES

MCNEMAR = "mcnemar"
BOOTSTRAP = "bootstrap"
#: A class share below this (of the largest class's share) makes the default metric balanced accuracy.
IMBALANCE_RATIO = 0.5


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    name: str
    label: str
    output_kind: str
    paired_test: str  # MCNEMAR (per-row right/wrong) or BOOTSTRAP
    binary_only: bool = False
    needs_scores: bool = False  # ranks rows by a class-1 score (ROC AUC)


METRICS: dict[str, MetricSpec] = {
    spec.name: spec for spec in (
        MetricSpec("accuracy", "Accuracy", CLASSES, MCNEMAR),
        MetricSpec("balanced_accuracy", "Balanced accuracy", CLASSES, BOOTSTRAP),
        MetricSpec("macro_f1", "Macro F1", CLASSES, BOOTSTRAP),
        MetricSpec("roc_auc", "ROC AUC (binary)", CLASSES, BOOTSTRAP, binary_only=True, needs_scores=True),
        MetricSpec("r2", "R² (clipped to [0, 1])", VALUES, BOOTSTRAP),
        MetricSpec("mae_skill", "MAE skill (1 − MAE / MAE of the median)", VALUES, BOOTSTRAP),
        MetricSpec("reconstruction_r2", "Reconstruction R²", RECONSTRUCTION, BOOTSTRAP),
    )
}

METRIC_CHOICES = [(spec.name, spec.label) for spec in METRICS.values()]


def metrics_for(output_kind: str, *, n_classes: int | None = None) -> list[str]:
    """The metrics a task of this kind may choose."""
    return [m.name for m in METRICS.values()
            if m.output_kind == output_kind and not (m.binary_only and n_classes not in (None, 2))]


def check_metric(metric: str, output_kind: str, *, n_classes: int | None = None) -> str:
    allowed = metrics_for(output_kind, n_classes=n_classes)
    if metric not in allowed:
        raise ValueError(f"metric: expected one of {', '.join(allowed)} for a {output_kind} task, got {metric!r}")
    return metric


def default_metric(output_kind: str, y_train: np.ndarray | None = None) -> str:
    """Accuracy for balanced classes, balanced accuracy when the smallest class is under half the largest."""
    if output_kind == CLASSES:
        if y_train is not None and len(y_train):
            counts = np.bincount(np.asarray(y_train, dtype=np.int64).reshape(-1))
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.min() < IMBALANCE_RATIO * counts.max():
                return "balanced_accuracy"
        return "accuracy"
    return "r2" if output_kind == VALUES else "reconstruction_r2"


# ------------------------------------------------------------------------------- predictions


@dataclasses.dataclass(frozen=True)
class Predictions:
    """What an implementation said about each row: labels or values, and (classes) a class-1 score."""

    values: np.ndarray  # (N,) labels for classes; (N, ...) values otherwise
    scores: np.ndarray | None = None  # (N,) class-1 score for binary tasks, when the implementation gives one


def predictions_from_raw(output_kind: str, raw: np.ndarray) -> Predictions:
    """Raw implementation outputs → ``Predictions`` (logits/probabilities or labels for classes)."""
    raw = np.asarray(raw)
    if output_kind != CLASSES:
        return Predictions(raw)
    if raw.ndim == 2:
        labels = raw.argmax(axis=1).astype(np.int64)
        scores = None
        if raw.shape[1] == 2 and np.all(np.isfinite(raw)):
            z = raw.astype(np.float64)
            z = z - z.max(axis=1, keepdims=True)
            e = np.exp(z)
            scores = e[:, 1] / e.sum(axis=1)
        return Predictions(labels, scores)
    return Predictions(raw.reshape(len(raw)).astype(np.int64))


# ----------------------------------------------------------------------------------- scoring


def _r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """R² of one set of values; a constant target scores 1 only if matched exactly."""
    ss_res = float(np.sum((y_true - y_pred) ** 2))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    if ss_tot == 0.0:
        return 1.0 if ss_res <= 1e-12 * max(1, y_true.size) else 0.0
    return 1.0 - ss_res / ss_tot


def _clip(value: float) -> float:
    return float(min(1.0, max(0.0, value)))


def _per_class(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(classes present in y, recall per class, F1 per class) — classes only predicted count for F1."""
    classes = np.unique(np.concatenate([y, p]))
    recall, f1 = [], []
    present = np.unique(y)
    for k in classes:
        tp = float(np.sum((p == k) & (y == k)))
        fn = float(np.sum((p != k) & (y == k)))
        fp = float(np.sum((p == k) & (y != k)))
        if k in present:
            recall.append(tp / (tp + fn))
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0)
    return present, np.asarray(recall), np.asarray(f1)


def _roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney form: P(score of a random positive > score of a random negative), ties count half."""
    pos, neg = scores[y == 1], scores[y != 1]
    if len(pos) == 0 or len(neg) == 0:
        return 0.5
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order), dtype=np.float64)
    values = np.concatenate([pos, neg])[order]
    # average ranks for ties
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def metric_score(metric: str, y_true: np.ndarray, predictions: Predictions) -> float:
    """The metric's score in [0, 1] for these rows."""
    spec = METRICS.get(metric)
    if spec is None:
        raise ValueError(f"metric: unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    y_true = np.asarray(y_true)
    values = np.asarray(predictions.values)
    n = y_true.shape[0] if y_true.ndim else 0
    if n == 0:
        raise ValueError("cannot score an empty set")
    if values.shape[0] != n:
        raise ValueError(f"predictions have {values.shape[0]} rows, the targets {n}")
    if spec.output_kind == CLASSES:
        y = y_true.reshape(n).astype(np.int64)
        p = values.reshape(n).astype(np.int64)
        if metric == "accuracy":
            return float(np.mean(p == y))
        if metric == "roc_auc":
            s = predictions.scores if predictions.scores is not None else p.astype(np.float64)
            if not np.all(np.isfinite(s)):
                return 0.0
            return _clip(_roc_auc(y, np.asarray(s, dtype=np.float64).reshape(n)))
        _, recall, f1 = _per_class(y, p)
        return float(recall.mean()) if metric == "balanced_accuracy" else float(f1.mean())
    yt = y_true.astype(np.float64).reshape(n, -1)
    yp = values.astype(np.float64).reshape(n, -1)
    if yt.shape != yp.shape:
        raise ValueError(f"predictions have shape {values.shape}, the targets {y_true.shape}")
    if not np.all(np.isfinite(yp)):
        return 0.0
    if metric == "r2":
        return float(np.mean([_clip(_r2(yt[:, j], yp[:, j])) for j in range(yt.shape[1])]))
    if metric == "mae_skill":
        skills = []
        for j in range(yt.shape[1]):
            reference = float(np.mean(np.abs(yt[:, j] - np.median(yt[:, j]))))
            mae = float(np.mean(np.abs(yt[:, j] - yp[:, j])))
            skills.append(1.0 if reference == 0.0 and mae <= 1e-12 else _clip(1.0 - mae / max(reference, 1e-12)))
        return float(np.mean(skills))
    return _clip(_r2(yt.ravel(), yp.ravel()))


def row_correct(y_true: np.ndarray, predictions: Predictions) -> np.ndarray:
    """Per-row right/wrong (bool (N,)) for accuracy-like metrics (the McNemar test's input)."""
    n = len(y_true)
    return np.asarray(predictions.values).reshape(n).astype(np.int64) == np.asarray(y_true).reshape(n)


def scorer(metric: str, y_true: np.ndarray) -> Callable[[Predictions, np.ndarray], float]:
    """``score(predictions, rows)``: the metric on a subset (or resample) of rows — for bootstraps."""
    y_true = np.asarray(y_true)

    def score(predictions: Predictions, rows: np.ndarray) -> float:
        subset = Predictions(np.asarray(predictions.values)[rows],
                             None if predictions.scores is None else np.asarray(predictions.scores)[rows])
        return metric_score(metric, y_true[rows], subset)

    return score
