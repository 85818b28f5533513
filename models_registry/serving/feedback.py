"""Feedback: true labels and values reported for live predictions, and the live scores they give.

A predict answer carries a prediction id (``serving.prediction_ids``): a signed token that
says which implementation and version answered and what each row's output was. A client that
later learns the truth reports it to ``POST /api/tasks/<slug>/feedback``:

* ``feedback_reports`` — validates a request's items: each id verified and decoded (tampered,
  malformed, expired and other tasks' ids refused), each row in range, each truth a class of
  the task or as many finite values as the task has outputs. Every problem is reported with
  the item it is in; nothing is recorded unless every item is valid.
* ``feedback_record`` — records each (prediction, row) once: a unique key on the id's digest
  and the row, so a retried request counts once.
* ``feedback_live_score`` / ``feedback_live`` — the task's metric on the newest
  ``PLASTICITY_FEEDBACK_WINDOW_ROWS`` reports of predictions made in the last
  ``PLASTICITY_FEEDBACK_WINDOW_S`` seconds, per implementation and version, with its 95 %
  interval (Wilson's for accuracy, a percentile bootstrap otherwise); for classes also the
  accuracy (Wilson), for values the mean absolute error (normal interval) and R² (bootstrap).

Serving's switching rule and the training trigger read ``feedback_live_score`` once it rests on
``PLASTICITY_FEEDBACK_MIN_COUNT`` reports. A ROC AUC task's live score is computed from the
predicted labels (an id carries no class scores): for two classes that is balanced accuracy.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from models_registry.choices import Implementation, OutputKind
from models_registry.models import ModelVersion, Task
from models_registry.nn.metrics import Predictions, metric_score
from models_registry.nn.significance import Z95, score_interval, wilson_interval
from models_registry.serving.conf import serving_setting
from models_registry.serving.models import Feedback
from models_registry.serving.prediction_ids import PredictionIdError, PredictionRef, prediction_id_read

LIVE_BOOTSTRAP = 500  # resamples behind a live interval (other metrics than accuracy)
MAX_ERRORS_LISTED = 50
IN_CHUNK = 500  # digests per IN (...) query


class FeedbackInvalid(ValueError):
    """Items that cannot be recorded; ``errors`` lists each as {"item", "field", "message"}."""

    def __init__(self, errors: list[dict]) -> None:
        first = errors[0]
        where = "items" if first["item"] is None else f"items[{first['item']}]"
        if first.get("field"):
            where += f".{first['field']}"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{where}: {first['message']}{more}")
        self.message = str(self)
        self.errors = errors[:MAX_ERRORS_LISTED]


@dataclasses.dataclass(frozen=True)
class Report:
    """One validated row of feedback: which prediction, which row of it, the truth."""

    item: int
    ref: PredictionRef
    row: int
    truth: int | list[float]


@dataclasses.dataclass(frozen=True)
class FeedbackResult:
    received: int
    recorded: int
    duplicates: int


@dataclasses.dataclass(frozen=True)
class LiveScore:
    """The task's metric on recent feedback of one implementation (and version), with its 95 % interval."""

    n: int
    metric: str
    score: float
    low: float
    high: float


# ------------------------------------------------------------------------------ validation


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Truths:
    """Turns a reported truth into a class index or a list of values, or says what was expected."""

    def __init__(self, task: Task) -> None:
        self.classes = task.output_kind == OutputKind.CLASSES
        self.n = int(task.n_outputs)
        self.labels = {str(label): i for i, label in enumerate(task.class_labels or [])}

    def parse(self, value: Any, width: int) -> int | list[float]:
        if self.classes:
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < self.n:
                return value
            if isinstance(value, str) and value in self.labels:
                return self.labels[value]
            names = list(self.labels)
            named = f" or one of {', '.join(names[:10])}{', ...' if len(names) > 10 else ''}" if names else ""
            raise ValueError(f"expected a class index 0–{self.n - 1}{named}, got {_short(value)}")
        values = value if isinstance(value, list) else [value]
        numbers = [_number(v) for v in values]
        if len(numbers) != width or any(v is None for v in numbers):
            one = "a finite number or " if width == 1 else ""
            raise ValueError(f"expected {one}a list of {width} finite number{'s' if width > 1 else ''}, "
                             f"got {_short(value)}")
        return [float(v) for v in numbers if v is not None]


def _rows_of(item: dict) -> tuple[list, list, str, str]:
    """(rows, truths, rows field, truths field) of one item, in either of its two forms."""
    if "rows" in item or "truths" in item:
        rows, truths = item.get("rows"), item.get("truths")
        if not isinstance(rows, list) or not isinstance(truths, list) or not rows or len(rows) != len(truths):
            raise ValueError("rows and truths: two lists of the same non-zero length")
        return rows, truths, "rows", "truths"
    if "truth" not in item:
        raise ValueError("truth: this field is required (or rows and truths for several rows of one prediction)")
    return [item.get("row", 0)], [item["truth"]], "row", "truth"


def feedback_reports(*, task: Task, items: Any, now: float | None = None) -> list[Report]:
    """Validate a feedback request's ``items``; raises ``FeedbackInvalid`` naming every bad item."""
    max_rows = serving_setting("PLASTICITY_FEEDBACK_MAX_ROWS")
    if not isinstance(items, list) or not items:
        what = "this field is required" if items is None else f"expected a non-empty list, got {_short(items)}"
        raise FeedbackInvalid([{"item": None, "field": "", "message": (
            f'{what}: send a list of {{"prediction_id", "row", "truth"}} objects')}])
    max_age_s = serving_setting("PLASTICITY_FEEDBACK_MAX_AGE_S")
    limit = serving_setting("PLASTICITY_PREDICTION_ID_MAX_VALUES")
    truths = _Truths(task)
    refs: dict[str, PredictionRef | str] = {}  # each id verified once per request
    reports: list[Report] = []
    errors: list[dict] = []
    count = 0

    def fail(index: int, field: str, message: str) -> None:
        errors.append({"item": index, "field": field, "message": message})

    for index, item in enumerate(items):
        if not isinstance(item, dict):
            fail(index, "", 'expected an object {"prediction_id", "row", "truth"}')
            continue
        token = item.get("prediction_id")
        if token is None:
            fail(index, "prediction_id", "this field is required")
            continue
        key = token if isinstance(token, str) else repr(token)
        if key not in refs:
            try:
                ref = prediction_id_read(token, max_age_s=max_age_s, limit=limit, now=now)
            except PredictionIdError as exc:
                refs[key] = str(exc)
            else:
                refs[key] = ref if ref.task_id == task.pk else f"issued for another task, not {task.slug}"
        ref_or_error = refs[key]
        if isinstance(ref_or_error, str):
            fail(index, "prediction_id", ref_or_error)
            continue
        ref = ref_or_error
        if ref.is_classes != truths.classes:
            fail(index, "prediction_id", "its outputs do not match the task's kind of output")
            continue
        try:
            rows, values, row_field, truth_field = _rows_of(item)
        except ValueError as exc:
            fail(index, "", str(exc))
            continue
        count += len(rows)
        if count > max_rows:
            raise FeedbackInvalid([{"item": index, "field": "", "message": (
                f"a request may report at most {max_rows} rows (PLASTICITY_FEEDBACK_MAX_ROWS); send the rest "
                "in another request")}])
        width = 1 if ref.is_classes else int(ref.outputs.shape[1])
        for j, (row, value) in enumerate(zip(rows, values, strict=True)):
            at = f"[{j}]" if row_field == "rows" else ""
            if isinstance(row, bool) or not isinstance(row, int) or not 0 <= row < ref.rows:
                fail(index, row_field + at, f"expected a row index 0–{ref.rows - 1} of the predicted batch, "
                                            f"got {_short(row)}")
                continue
            try:
                truth = truths.parse(value, width)
            except ValueError as exc:
                fail(index, truth_field + at, str(exc))
                continue
            reports.append(Report(item=index, ref=ref, row=row, truth=truth))
    _versions_exist(reports, fail)
    if errors:
        raise FeedbackInvalid(sorted(errors, key=lambda e: e["item"]))
    return reports


def _versions_exist(reports: list[Report], fail) -> None:
    wanted = {r.ref.version_id for r in reports if r.ref.version_id is not None}
    present = set(ModelVersion.objects.filter(pk__in=wanted).values_list("pk", flat=True)) if wanted else set()
    failed: set[int] = set()
    for report in reports:
        version_id = report.ref.version_id
        if version_id is not None and version_id not in present and report.item not in failed:
            failed.add(report.item)
            fail(report.item, "prediction_id", f"the version that answered (id {version_id}) no longer exists")


# ------------------------------------------------------------------------------ recording


def _chunks(values: list, size: int) -> Iterable[list]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def feedback_record(*, task: Task, reports: list[Report], user=None) -> FeedbackResult:
    """Record validated reports; a (prediction, row) already recorded (or twice in ``reports``) counts once."""
    digests = sorted({r.ref.digest for r in reports})
    existing: set[tuple[str, int]] = set()
    for chunk in _chunks(digests, IN_CHUNK):
        existing.update(Feedback.objects.filter(prediction__in=chunk).values_list("prediction", "row"))
    rows: list[Feedback] = []
    for report in reports:
        key = (report.ref.digest, report.row)
        if key in existing:
            continue
        existing.add(key)
        predicted = report.ref.outputs[report.row]
        if report.ref.is_classes:
            predicted_value: int | list[float] = int(predicted)
            correct, abs_error = predicted_value == report.truth, None
        else:
            predicted_value = [float(v) for v in predicted]
            truth = np.asarray(report.truth, dtype=np.float64)
            correct, abs_error = None, float(np.mean(np.abs(np.asarray(predicted_value) - truth)))
        rows.append(Feedback(
            task=task, implementation=report.ref.implementation, version_id=report.ref.version_id,
            prediction=report.ref.digest, row=report.row, predicted=predicted_value, truth=report.truth,
            correct=correct, abs_error=abs_error, predicted_at=datetime.fromtimestamp(report.ref.issued_at, tz=UTC),
            reported_by=user if getattr(user, "pk", None) is not None else None,
        ))
    with transaction.atomic():
        # ignore_conflicts: a concurrent request recording the same rows wins; these count once anyway.
        Feedback.objects.bulk_create(rows, ignore_conflicts=True)
    return FeedbackResult(received=len(reports), recorded=len(rows), duplicates=len(reports) - len(rows))


# ------------------------------------------------------------------------------ live scores


def live_stats(output_kind: str, metric: str, predicted: np.ndarray, truth: np.ndarray) -> dict:
    """Live score of ``predicted`` against ``truth`` with 95 % intervals. Pure numpy.

    Classes: the task's metric and accuracy (Wilson). Values: the task's metric, the mean
    absolute error (mean ± 1.96 standard errors) and R² (per output, clipped to [0, 1], averaged;
    percentile bootstrap).
    """
    n = int(len(truth))
    predictions = Predictions(predicted)
    score = metric_score(metric, truth, predictions)
    low, high = score_interval(metric, truth, predictions, n_boot=LIVE_BOOTSTRAP)
    stats: dict[str, Any] = {"n": n, "metric": metric, "score": score, "score_ci95": [low, high]}
    if output_kind == OutputKind.CLASSES:
        correct = int(np.sum(predicted.reshape(n) == truth.reshape(n)))
        stats.update(correct=correct, accuracy=correct / n, accuracy_ci95=list(wilson_interval(correct, n)))
        return stats
    errors = np.mean(np.abs(predicted.reshape(n, -1) - truth.reshape(n, -1)), axis=1)
    mae = float(errors.mean())
    half = Z95 * float(errors.std(ddof=1)) / math.sqrt(n) if n > 1 else None
    r2 = score if metric == "r2" else metric_score("r2", truth, predictions)
    r2_ci = [low, high] if metric == "r2" else list(score_interval("r2", truth, predictions, n_boot=LIVE_BOOTSTRAP))
    stats.update(mae=mae, mae_ci95=[max(0.0, mae - half), mae + half] if half is not None else None, r2=r2,
                 r2_ci95=r2_ci)
    return stats


def _window() -> tuple[datetime, int]:
    since = timezone.now() - timedelta(seconds=serving_setting("PLASTICITY_FEEDBACK_WINDOW_S"))
    return since, serving_setting("PLASTICITY_FEEDBACK_WINDOW_ROWS")


def _window_arrays(task: Task, implementation: str, version_id: int | None, since: datetime,
                   limit: int) -> tuple[np.ndarray, np.ndarray, list[datetime]] | None:
    rows = list(Feedback.objects.filter(task=task, implementation=implementation, version_id=version_id,
                                        predicted_at__gte=since)
                .order_by("-predicted_at", "-id").values_list("predicted", "truth", "predicted_at")[:limit])
    if not rows:
        return None
    predicted: np.ndarray
    truth: np.ndarray
    if task.output_kind == OutputKind.CLASSES:
        predicted = np.asarray([r[0] for r in rows], dtype=np.int64)
        truth = np.asarray([r[1] for r in rows], dtype=np.int64)
    else:
        predicted = np.asarray([r[0] for r in rows], dtype=np.float64).reshape(len(rows), -1)
        truth = np.asarray([r[1] for r in rows], dtype=np.float64).reshape(len(rows), -1)
    return predicted, truth, [r[2] for r in rows]


def feedback_live_score(*, task: Task, implementation: str, version_id: int | None) -> LiveScore | None:
    """The live score of one implementation (a neural version, or the algorithm) of ``task``; None with no feedback."""
    since, limit = _window()
    arrays = _window_arrays(task, implementation, version_id, since, limit)
    if arrays is None:
        return None
    predicted, truth, _times = arrays
    predictions = Predictions(predicted)
    score = metric_score(task.metric, truth, predictions)
    low, high = score_interval(task.metric, truth, predictions, n_boot=LIVE_BOOTSTRAP)
    return LiveScore(n=len(truth), metric=task.metric, score=score, low=low, high=high)


def feedback_live(*, task: Task) -> dict:
    """Live scores of every implementation and version of ``task`` with feedback in the window, newest version first."""
    since, limit = _window()
    min_count = serving_setting("PLASTICITY_FEEDBACK_MIN_COUNT")
    groups = list(Feedback.objects.filter(task=task, predicted_at__gte=since)
                  .values("implementation", "version_id").annotate(reports=Count("id")))
    numbers = dict(ModelVersion.objects.filter(pk__in=[g["version_id"] for g in groups if g["version_id"]])
                   .values_list("pk", "number"))
    live = []
    for group in groups:
        arrays = _window_arrays(task, group["implementation"], group["version_id"], since, limit)
        if arrays is None:
            continue
        predicted, truth, times = arrays
        stats = live_stats(task.output_kind, task.metric, predicted, truth)
        live.append({
            "implementation": group["implementation"], "version_id": group["version_id"],
            "version": numbers.get(group["version_id"]), "reports_in_window": group["reports"],
            "enough": stats["n"] >= min_count, **stats,
            "first_predicted_at": min(times), "last_predicted_at": max(times),
        })
    live.sort(key=lambda g: (g["implementation"] != Implementation.NEURAL, -(g["version"] or 0)))
    return {"window_s": serving_setting("PLASTICITY_FEEDBACK_WINDOW_S"), "window_rows": limit,
            "min_count": min_count, "output_kind": task.output_kind, "metric": task.metric, "live": live}
