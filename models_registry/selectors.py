"""Reads of the model registry."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import QuerySet
from django.utils import timezone

from models_registry.choices import Implementation, SampleSource, ScoreSplit
from models_registry.models import DatasetVersion, ModelVersion, NeuralModel, PerformanceSample, Task


def task_list() -> QuerySet[Task]:
    return Task.objects.all().order_by("slug")


def dataset_versions(*, task: Task) -> QuerySet[DatasetVersion]:
    """The task's dataset versions, newest first, with their parents and authors."""
    return DatasetVersion.objects.filter(task=task).select_related("task", "parent", "created_by").order_by("-number")


def model_list(*, task: Task | None = None) -> QuerySet[NeuralModel]:
    qs = NeuralModel.objects.select_related("task")
    return qs.filter(task=task) if task is not None else qs


def version_active(*, model: NeuralModel) -> ModelVersion | None:
    return ModelVersion.objects.filter(model=model, is_active=True).first()


def version_best_in_task(*, task: Task, exclude_model: NeuralModel | None = None) -> ModelVersion | None:
    """The highest-scoring active version of any model of the task (the natural teacher)."""
    qs = ModelVersion.objects.filter(model__task=task, is_active=True, score__isnull=False)
    if exclude_model is not None:
        qs = qs.exclude(model=exclude_model)
    return qs.order_by("-score", "latency_p95_ms").first()


def teacher_score(*, model: NeuralModel) -> float | None:
    """Best score of another implementation of the model's task (another model or the algorithm)."""
    scores = []
    other = version_best_in_task(task=model.task, exclude_model=model)
    if other is not None and other.score is not None:
        scores.append(other.score)
    algo = algorithm_latest_sample(task=model.task)
    if algo is not None and algo.score is not None:
        scores.append(algo.score)
    return max(scores) if scores else None


#: Evaluation samples decisions may read: the gate split's (and, until re-measured, a task's
#: samples from before the gate split existed). Never the sealed test split's.
DECISION_SPLITS = (ScoreSplit.GATE, ScoreSplit.LEGACY_TEST)


def algorithm_latest_sample(*, task: Task) -> PerformanceSample | None:
    """The algorithm's latest gate evaluation (what decisions compare with)."""
    return (
        PerformanceSample.objects.filter(
            task=task, implementation=Implementation.ALGORITHMIC, source=SampleSource.EVALUATION,
            split__in=DECISION_SPLITS,
        )
        .order_by("-created_at", "-id")
        .first()
    )


def algorithm_tuning_of(task: Task) -> dict | None:
    """The algorithm's tuning on the validation split (``models_registry.tuning``) when it was tuned
    for the task's current algorithm path: the settings and their validation score; else None."""
    record = task.algorithm_params or {}
    if not task.algorithm_path or record.get("path") != task.algorithm_path or not isinstance(record.get("params"), dict):
        return None
    tried = record.get("tried") or []
    return {"params": record["params"], "metric": record.get("metric"), "split": record.get("split", "val"),
            "validation_score": max((t["val"] for t in tried), default=None), "n_val": record.get("n_val"),
            "tried": len(tried), "of": record.get("of", len(tried))}


def version_latest_sample(*, version: ModelVersion) -> PerformanceSample | None:
    """The version's latest gate evaluation."""
    return (
        PerformanceSample.objects.filter(version=version, source=SampleSource.EVALUATION, split__in=DECISION_SPLITS)
        .order_by("-created_at", "-id")
        .first()
    )



#: Live latency counts when the tracker saw at least this many requests of a version in the window.
LIVE_LATENCY_WINDOW_S = 900.0
LIVE_LATENCY_MIN_REQUESTS = 50


def version_live_latency_p95(*, version: ModelVersion, window_s: float = LIVE_LATENCY_WINDOW_S,
                             min_requests: int = LIVE_LATENCY_MIN_REQUESTS) -> float | None:
    """The p95 latency live traffic saw on ``version`` lately (ms), or None with too few requests.

    Every web process's tracker writes one ``source="live"`` sample per flush window; their p95s
    are combined weighted by the requests each window served (a percentile of the union is not
    recoverable from the windows; the weighted mean is close when the windows are alike).
    """
    since = timezone.now() - timedelta(seconds=window_s)
    rows: list[tuple[float, int]] = [
        (float(p95), int(n)) for p95, n in PerformanceSample.objects.filter(
            version=version, source=SampleSource.LIVE, created_at__gte=since, latency_p95_ms__isnull=False,
            n_requests__gt=0).values_list("latency_p95_ms", "n_requests") if p95 is not None]
    total = sum(n for _p95, n in rows)
    if total < min_requests:
        return None
    return sum(p95 * n for p95, n in rows) / total
