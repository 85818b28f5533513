"""Two versions of one task side by side: scores per split with intervals, latency, size, runtime, the
genome diff, and what each gets wrong on the gate split.

Each version is run through the project's own inference path (``version_predict_fn``: its runtime,
its weights checked against their sha256) on at most ``ROWS_CAP`` rows of the validation and the
gate splits, in the splits' fixed order. From those predictions come the validation and gate scores
with their 95 % intervals (``score_interval``: Wilson for accuracy, a bootstrap otherwise), and on the
gate rows a confusion matrix with per-class precision, recall and F1 (classes) or the residuals
(values, reconstruction). The sealed test split is not read here: its score and interval are the
ones recorded on the version when it was made, shown as the sealed test split's.

Running two versions costs a second or so, so the measurements are cached per version pair (the
Django cache), keyed by what they depend on: both versions' weights and runtimes, the task's
dataset and its metric. A reload, or the same pair the other way round, runs nothing.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from django.core.cache import cache

from models_registry.choices import OutputKind
from models_registry.implementations import task_dataset, version_predict_fn
from models_registry.models import ModelVersion, Task
from models_registry.nn.evaluation import evaluate
from models_registry.nn.genome import GenomeError
from models_registry.nn.metrics import METRICS
from models_registry.nn.significance import score_interval
from models_registry.weights import WeightsError
from project.panel import charts

#: Rows of each split a version is run on (the first ones, in the split's fixed order).
ROWS_CAP = 5000
#: Residual points drawn per version (all outputs together).
RESIDUAL_POINTS = 4000
#: Values shown per output kept in the cache (six significant digits).
DIGITS = 6
N_BOOT = 500
COMPARE_CACHE_S = 24 * 3600
SPLITS = (("val", "validation"), ("gate", "gate"))
CACHE_VERSION = 1


# ------------------------------------------------------------------------------ refusals and keys


def compare_refusal(*, a: ModelVersion, b: ModelVersion) -> str | None:
    """Why the two versions cannot be compared, or None."""
    if a.pk == b.pk:
        return f"Both sides are {a.model} v{a.number}: pick two different versions."
    if a.model.task_id != b.model.task_id:
        return (f"{a.model} v{a.number} and {b.model} v{b.number} belong to different tasks "
                f"({a.model.task.slug} and {b.model.task.slug}): their scores are measured on different rows, "
                "often with different metrics, so they are not compared. Pick two versions of the same task.")
    return None


def compare_cache_key(*, a: ModelVersion, b: ModelVersion) -> str:
    """The cache key of a pair's measurements: the same for (a, b) and (b, a)."""
    task = a.model.task
    sides = sorted((a, b), key=lambda v: v.pk)
    parts = [f"{v.pk}-{v.weights_sha256[:16]}-{v.artifact_sha256[:16]}-{v.runtime}" for v in sides]
    return (f"panel:compare:{CACHE_VERSION}:{':'.join(parts)}:{task.dataset_sha256[:16]}:{task.metric}:"
            f"{ROWS_CAP}")


# ------------------------------------------------------------------------------ running a version


def _round(values: np.ndarray) -> list[float | None]:
    return [float(f"{v:.{DIGITS}g}") if math.isfinite(v) else None for v in np.asarray(values, dtype=np.float64)]


def _confusion(task: Task, y: np.ndarray, labels: np.ndarray) -> dict:
    """Rows: the true class; columns: the predicted one. Per class: precision, recall, F1, support."""
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    k = max(int(task.n_outputs), int(y.max(initial=-1)) + 1, int(labels.max(initial=-1)) + 1)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (y, labels), 1)
    names = [str(n) for n in (task.class_labels or [])]
    names += [str(i) for i in range(len(names), k)]
    per_class = []
    for i in range(k):
        hit, predicted, support = int(matrix[i, i]), int(matrix[:, i].sum()), int(matrix[i, :].sum())
        precision = hit / predicted if predicted else None
        recall = hit / support if support else None
        f1 = (2 * precision * recall / (precision + recall)
              if precision is not None and recall is not None and precision + recall > 0 else None)
        per_class.append({"label": names[i], "precision": precision, "recall": recall, "f1": f1,
                          "support": support})
    return {"labels": names[:k], "matrix": matrix.tolist(), "total": int(matrix.sum()), "per_class": per_class}


def _residuals(task: Task, targets: np.ndarray, values: np.ndarray) -> dict:
    """Predicted value against residual (true − predicted) per output, a bounded sample of the gate rows."""
    n = len(targets)
    truth = np.asarray(targets, dtype=np.float64).reshape(n, -1)
    predicted = np.asarray(values, dtype=np.float64).reshape(n, -1)
    residual = truth - predicted
    outputs = truth.shape[1]
    finite = np.isfinite(residual)
    rows = max(1, RESIDUAL_POINTS // max(1, outputs))
    shown = min(outputs, len(charts.PALETTE)) if task.output_kind == OutputKind.VALUES else 1
    names = [task.target_name or "value"] if outputs == 1 else [f"output {i}" for i in range(outputs)]
    series = []
    if task.output_kind == OutputKind.VALUES:
        for j in range(shown):
            series.append({"name": names[j], "predicted": _round(predicted[:rows, j]),
                           "residual": _round(residual[:rows, j])})
    else:  # reconstruction: every feature pooled, one cloud
        series.append({"name": "all features", "predicted": _round(predicted[:rows].reshape(-1)[:RESIDUAL_POINTS]),
                       "residual": _round(residual[:rows].reshape(-1)[:RESIDUAL_POINTS])})
    ok = residual[finite]
    return {"series": series, "outputs": outputs, "n": n,
            "mae": float(np.abs(ok).mean()) if ok.size else None,
            "rmse": float(np.sqrt((ok ** 2).mean())) if ok.size else None,
            "non_finite": int((~finite).sum())}


def version_measure(*, version: ModelVersion, task: Task) -> dict:
    """Run ``version`` on the first ``ROWS_CAP`` validation and gate rows; scores, intervals, gate analysis."""
    data = task_dataset(task)
    predict_fn = version_predict_fn(version)
    measured: dict[str, Any] = {"splits": {}, "gate": None}
    for split, _label in SPLITS:
        X_all, y_all = data.val if split == "val" else data.gate
        X, y = X_all[:ROWS_CAP], y_all[:ROWS_CAP]
        entry: dict[str, Any] = {"score": None, "low": None, "high": None, "n": int(len(X)), "of": int(len(X_all))}
        measured["splits"][split] = entry
        if not len(X):
            continue
        result = evaluate(predict_fn, X, y, task.output_kind, metric=task.metric, split=split, measure=False)
        assert result.predictions is not None
        targets = X if task.output_kind == OutputKind.RECONSTRUCTION and y is None else y
        low, high = score_interval(task.metric, np.asarray(targets), result.predictions, n_boot=N_BOOT)
        entry.update(score=result.score, low=low, high=high)
        if split == "gate":
            measured["gate"] = (_confusion(task, targets, result.predictions.values)
                                if task.output_kind == OutputKind.CLASSES
                                else _residuals(task, targets, result.predictions.values))
    return measured


def compare_measurements(*, a: ModelVersion, b: ModelVersion) -> dict[str, dict]:
    """Both versions' measurements by version id (as a string), from the cache when the pair was run."""
    key = compare_cache_key(a=a, b=b)
    cached = cache.get(key)
    if cached is not None:
        return cached
    task = a.model.task
    measured: dict[str, dict] = {}
    failed = False
    for version in (a, b):
        try:
            measured[str(version.pk)] = version_measure(version=version, task=task)
        except (WeightsError, GenomeError) as exc:
            measured[str(version.pk)] = {"error": f"could not be run: {exc}", "splits": {}, "gate": None}
            failed = True
    if not failed:  # a missing weights file may be restored; try again on the next load
        cache.set(key, measured, COMPARE_CACHE_S)
    return measured


# ------------------------------------------------------------------------------ the page


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def genome_diff(a: dict, b: dict) -> dict[str, list[dict]]:
    """Both genomes as dotted keys: those that differ (or exist on one side only) and those that agree."""
    flat_a, flat_b = _flatten(a or {}), _flatten(b or {})
    missing = object()
    changed: list[dict] = []
    same: list[dict] = []
    for key in sorted(set(flat_a) | set(flat_b)):
        va, vb = flat_a.get(key, missing), flat_b.get(key, missing)
        row = {"key": key, "a": "—" if va is missing else json.dumps(va),
               "b": "—" if vb is missing else json.dumps(vb)}
        (same if va is not missing and vb is not missing and row["a"] == row["b"] else changed).append(row)
    return {"changed": changed, "same": same}


def residual_figure(gate: dict) -> dict:
    """Predicted value (x) against residual (y) on the gate rows, a zero line across."""
    data = []
    for i, series in enumerate(gate["series"]):
        data.append({"type": "scatter", "mode": "markers", "name": series["name"], "x": series["predicted"],
                     "y": series["residual"],
                     "marker": {"color": charts.PALETTE[i % len(charts.PALETTE)], "size": 4, "opacity": 0.55},
                     "hovertemplate": f"{series['name']}<br>predicted %{{x:.4g}}<br>residual %{{y:.4g}}<extra></extra>"})
    return charts.figure(data, height=320, showlegend=len(data) > 1,
                         xaxis={"title": {"text": "predicted"}}, yaxis={"title": {"text": "residual (true − predicted)"}},
                         shapes=[{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": 0, "y1": 0,
                                  "line": {"color": charts.MUTED, "dash": "dash", "width": 1}}])


def _split_rows(version: ModelVersion, measured: dict) -> list[dict]:
    rows = []
    for split, label in SPLITS:
        entry = measured.get("splits", {}).get(split) or {}
        rows.append({"split": split, "label": label, "score": entry.get("score"), "low": entry.get("low"),
                     "high": entry.get("high"), "n": entry.get("n"), "of": entry.get("of"), "stored": False})
    test = (version.metrics or {}).get("test") or {}
    rows.append({"split": "test", "label": "sealed test", "score": version.test_score, "low": version.test_ci95_low,
                 "high": version.test_ci95_high, "n": test.get("n_rows"), "of": test.get("n_rows"), "stored": True})
    return rows


def _side(name: str, version: ModelVersion, measured: dict) -> dict:
    gate = measured.get("gate")
    kind = version.model.task.output_kind
    matrix = None
    if gate and kind == OutputKind.CLASSES:
        largest = max((max(row) for row in gate["matrix"]), default=0) or 1
        matrix = [{"label": label, "cells": [{"count": c, "share": round(c / largest, 3), "hit": i == j}
                                             for j, c in enumerate(row)], "total": sum(row)}
                  for i, (label, row) in enumerate(zip(gate["labels"], gate["matrix"], strict=True))]
    return {
        "name": name, "version": version, "model": version.model, "label": f"{version.model} v{version.number}",
        "runtime": version.get_runtime_display(), "splits": _split_rows(version, measured),
        "p50_ms": version.latency_p50_ms, "p95_ms": version.latency_p95_ms,
        "p95_batch_ms": version.latency_p95_ms_batch, "n_parameters": version.n_parameters,
        "size_bytes": version.size_bytes, "error": measured.get("error", ""), "gate": gate, "matrix": matrix,
        "residual_figure": residual_figure(gate) if gate and kind != OutputKind.CLASSES else None,
    }


def _difference(a: float | None, b: float | None) -> float | None:
    return b - a if a is not None and b is not None else None


def compare_page(*, a: ModelVersion, b: ModelVersion) -> dict:
    """Everything the compare page shows about versions ``a`` and ``b`` of one task (checked by the caller)."""
    task: Task = a.model.task
    measured = compare_measurements(a=a, b=b)
    side_a, side_b = _side("a", a, measured[str(a.pk)]), _side("b", b, measured[str(b.pk)])
    score_rows = [{"label": ra["label"], "stored": ra["stored"], "a": ra, "b": rb,
                   "difference": _difference(ra["score"], rb["score"])}
                  for ra, rb in zip(side_a["splits"], side_b["splits"], strict=True)]
    spec = METRICS.get(task.metric)
    return {
        "task": task, "a": side_a, "b": side_b, "sides": [side_a, side_b], "score_rows": score_rows,
        "metric": task.metric, "metric_label": spec.label if spec else task.metric,
        "classes": task.output_kind == OutputKind.CLASSES, "cap": ROWS_CAP,
        "genome_diff": genome_diff(a.genome, b.genome),
        "latency_difference": {"p50": _difference(a.latency_p50_ms, b.latency_p50_ms),
                               "p95": _difference(a.latency_p95_ms, b.latency_p95_ms)},
    }
