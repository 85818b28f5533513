"""Reads behind the task page (``/tasks/<slug>/``): the task's data and splits, its implementations,
serving, dataset versions, and the drift and live-score charts.

The live-score series is aggregated in the database (counts, correct counts and error moments per
implementation, version and time bucket), so the page reads at most ``LIVE_SERIES_MAX`` ×
``LIVE_BUCKETS_MAX`` rows however much feedback there is.
"""

from __future__ import annotations

import math
from datetime import datetime
from functools import reduce
from operator import or_

from django.db.models import Avg, Count, F, Max, Min, Q
from django.db.models.functions import Trunc

from improvement.models import ImprovementConfig
from models_registry.choices import Implementation, OutputKind, SampleSource, ScoreSplit
from models_registry.models import DatasetVersion, ModelVersion, PerformanceSample, Task
from models_registry.nn.significance import Z95, wilson_interval
from models_registry.selectors import algorithm_tuning_of
from models_registry.serving.models import DriftReading, Feedback, InputDrift
from models_registry.serving.selectors import serving_comparison, serving_state_get
from project.panel import charts
from project.panel.selectors import switches_recent

#: Each split's role (DESIGN.md): which decisions read it.
SPLIT_ROLES = (
    ("train", "n_train", "fits the weights"),
    ("validation", "n_val", "choices inside a run (early stopping, search trials)"),
    ("gate", "n_gate", "every decision between runs: promotion, triggers, teacher, serving floor"),
    ("test", "n_test", "sealed: scored for every version, read by no decision"),
)
CLASS_LABELS_SHOWN = 24
DRIFT_READINGS_SHOWN = 1440
DRIFT_ALARMS_SHOWN = 200
DRIFT_ALARMS_LISTED = 10
LIVE_SERIES_MAX = 6
LIVE_BUCKETS_MAX = 60
#: Time buckets of the live-score chart, finest first: the first that holds the data's span in at most
#: ``LIVE_BUCKETS_MAX`` buckets is used. (Trunc kind, label, length in seconds; a month counts 30 days.)
LIVE_BUCKETS = (("minute", "1 minute", 60), ("hour", "1 hour", 3600), ("day", "1 day", 86400),
                ("week", "1 week", 7 * 86400), ("month", "1 month", 30 * 86400))


# ------------------------------------------------------------------------------ data and splits


def task_data(task: Task) -> dict:
    labels = [str(label) for label in (task.class_labels or [])]
    if task.output_kind == OutputKind.CLASSES and not labels:
        labels = [str(i) for i in range(task.n_outputs)]
    return {
        "kind": task.get_output_kind_display(), "output_kind": task.output_kind,
        "source": task.get_source_display(), "input_shape": " × ".join(str(d) for d in task.input_shape),
        "n_inputs": math.prod(int(d) for d in task.input_shape), "features": list(task.feature_names or []),
        "target": task.target_name, "n_outputs": task.n_outputs,
        "classes": labels[:CLASS_LABELS_SHOWN], "classes_more": max(0, len(labels) - CLASS_LABELS_SHOWN),
        "metric": task.get_metric_display(), "metric_code": task.metric,
    }


def task_splits(task: Task) -> list[dict]:
    """Rows per split (the task's fixed splits, grown by appends), with their share and role."""
    total = task.n_train + task.n_val + task.n_gate + task.n_test
    return [{"name": name, "rows": getattr(task, field), "role": role,
             "share": getattr(task, field) / total if total else None} for name, field, role in SPLIT_ROLES]


# ------------------------------------------------------------------------------ implementations


def task_implementations(task: Task, comparison: dict) -> dict:
    """The algorithm (gate and sealed test score) and every neural model with its active version."""
    algorithm_test = (PerformanceSample.objects.filter(
        task=task, implementation=Implementation.ALGORITHMIC, source=SampleSource.EVALUATION, split=ScoreSplit.TEST)
        .order_by("-created_at", "-id").values_list("score", flat=True).first())
    held = comparison["held_out"]["algorithmic"] or {}
    models = list(task.neural_models.annotate(n_versions=Count("versions")).order_by("name"))
    active = {v.model_id: v for v in ModelVersion.objects.filter(model__task=task, is_active=True)}
    return {
        "algorithm": {"path": task.algorithm_path, "evaluation": task.get_algorithm_evaluation_display(),
                      "tuned": algorithm_tuning_of(task),
                      "gate": held.get("score"), "test": algorithm_test, "p95_ms": held.get("latency_p95_ms")},
        "neural": [{"model": m, "versions": m.n_versions, "active": active.get(m.pk)} for m in models],
    }


# ------------------------------------------------------------------------------ drift


def drift_readings(task: Task, *, limit: int = DRIFT_READINGS_SHOWN) -> list[dict]:
    """The task's newest drift readings, oldest first, for the chart."""
    rows = (DriftReading.objects.filter(task=task).order_by("-created_at", "-id")
            .values("created_at", "psi_max", "threshold", "rows", "drifted", "features", "alarm_id")[:limit])
    return [{"at": charts.ms(r["created_at"]), "created_at": r["created_at"], "psi_max": r["psi_max"],
             "threshold": r["threshold"], "rows": r["rows"], "drifted": r["drifted"], "features": r["features"] or [],
             "alarm_id": r["alarm_id"]} for r in reversed(list(rows))]


def drift_alarms(task: Task, *, limit: int = DRIFT_ALARMS_SHOWN) -> list[dict]:
    """The task's newest drift alarms, oldest first, with the features that moved."""
    rows = InputDrift.objects.filter(task=task).order_by("-created_at", "-id")[:limit]
    return [{"id": d.pk, "at": charts.ms(d.created_at), "created_at": d.created_at, "psi_max": d.psi_max,
             "rows": d.rows, "threshold": (d.evidence or {}).get("threshold"),
             "reference_rows": (d.evidence or {}).get("reference_rows"),
             "moved": (d.evidence or {}).get("features", []),
             "features": [f["feature"] for f in (d.evidence or {}).get("features", [])]} for d in reversed(list(rows))]


# ------------------------------------------------------------------------------ live score


def live_bucket(first: datetime, last: datetime) -> tuple[str, str, int]:
    """The finest bucket that holds ``[first, last]`` in at most ``LIVE_BUCKETS_MAX`` buckets."""
    span = (last - first).total_seconds()
    for bucket in LIVE_BUCKETS:
        if span / bucket[2] < LIVE_BUCKETS_MAX:
            return bucket
    return LIVE_BUCKETS[-1]


def _interval(*, classes: bool, n: int, correct: int, error: float | None, error_sq: float | None
              ) -> tuple[float | None, float | None, float | None]:
    """(value, low, high): accuracy with Wilson's interval, or the mean absolute error ± 1.96 standard errors."""
    if classes:
        low, high = wilson_interval(correct, n)
        return correct / n, low, high
    if error is None:
        return None, None, None
    if n < 2 or error_sq is None:
        return error, None, None
    variance = max(0.0, error_sq - error * error) * n / (n - 1)
    half = Z95 * math.sqrt(variance / n)
    return error, max(0.0, error - half), error + half


def live_score_series(task: Task) -> tuple[list[dict], tuple[str, str, int]]:
    """Live accuracy (classes) or error (values) per implementation and version and time bucket.

    The ``LIVE_SERIES_MAX`` implementations/versions with the newest feedback; buckets sized to the
    span of their feedback (``live_bucket``); each point at its bucket's middle.
    """
    classes = task.output_kind == OutputKind.CLASSES
    groups = list(Feedback.objects.filter(task=task).values("implementation", "version_id")
                  .annotate(first=Min("predicted_at"), last=Max("predicted_at")).order_by("-last")[:LIVE_SERIES_MAX])
    if not groups:
        return [], LIVE_BUCKETS[0]
    bucket = live_bucket(min(g["first"] for g in groups), max(g["last"] for g in groups))
    chosen = reduce(or_, (Q(implementation=g["implementation"], version_id=g["version_id"]) for g in groups))
    rows = (Feedback.objects.filter(task=task).filter(chosen)
            .annotate(bucket=Trunc("predicted_at", bucket[0]))
            .values("implementation", "version_id", "bucket")
            .annotate(n=Count("id"), correct=Count("id", filter=Q(correct=True)), error=Avg("abs_error"),
                      error_sq=Avg(F("abs_error") * F("abs_error")))
            .order_by("bucket"))
    versions = {pk: (number, name) for pk, number, name in ModelVersion.objects.filter(
        pk__in=[g["version_id"] for g in groups if g["version_id"]]).values_list("pk", "number", "model__name")}
    several_models = len({name for _number, name in versions.values()}) > 1
    points: dict[tuple[str, int | None], list[dict]] = {(g["implementation"], g["version_id"]): [] for g in groups}
    for row in rows:
        value, low, high = _interval(classes=classes, n=row["n"], correct=row["correct"], error=row["error"],
                                     error_sq=row["error_sq"])
        if value is None:
            continue
        points[(row["implementation"], row["version_id"])].append({
            "at": charts.ms(row["bucket"]) + bucket[2] * 500, "start": row["bucket"], "n": row["n"],
            "correct": row["correct"], "value": value, "low": low, "high": high})
    series = []
    for (implementation, version_id), group_points in points.items():
        label = implementation
        if version_id is not None:
            number, name = versions.get(version_id, ("?", ""))
            label = f"{implementation} {name + ' ' if several_models else ''}v{number}"
        series.append({"label": label, "implementation": implementation, "version_id": version_id,
                       "points": group_points})
    series.sort(key=lambda s: (s["implementation"] != Implementation.NEURAL, s["label"]))
    return series, bucket


# ------------------------------------------------------------------------------ the page


def task_page(task: Task, *, append_error: str = "") -> dict:
    comparison = serving_comparison(task=task)
    state = serving_state_get(task=task)
    config = ImprovementConfig.load()
    readings = drift_readings(task)
    alarms = drift_alarms(task)
    series, bucket = live_score_series(task)
    datasets = list(DatasetVersion.objects.filter(task=task).select_related("created_by", "parent"))
    return {
        "task": task, "data": task_data(task), "splits": task_splits(task),
        "implementations": task_implementations(task, comparison),
        "serving": {
            "state": state, "implementation": state.implementation if state else "—",
            "reason": state.get_reason_display() if state else "no serving decision yet",
            "detail": state.detail if state else "", "since": state.since if state else None,
            "pinned": bool(state and state.pinned), "version": state.version if state and state.version_id else None,
            "floor": comparison["floor"], "budget_ms": comparison["latency_budget_ms"], "shadow": comparison["shadow"],
        },
        "switches": switches_recent(limit=10, task=task),
        "row": {"task": task, "datasets": datasets, "append_error": append_error},
        "drift_figure": charts.drift_figure(readings, alarms=alarms),
        "drift_latest": readings[-1] if readings else None, "drift_checks": len(readings),
        "drift_alarms": list(reversed(alarms))[:DRIFT_ALARMS_LISTED], "drift_alarm_count": len(alarms),
        "drift_config": {"threshold": config.drift_psi_threshold, "min_rows": config.drift_min_rows,
                         "window_rows": config.drift_window_rows, "cooldown_s": config.drift_cooldown_s},
        "live_figure": charts.live_score_figure(series, classes=task.output_kind == OutputKind.CLASSES,
                                                bucket_s=bucket[2]),
        "live_bucket": bucket[1], "live_series": series, "feedback": comparison["feedback"],
    }
