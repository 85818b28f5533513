"""Reads of the model registry."""

from __future__ import annotations

from django.db.models import QuerySet

from models_registry.choices import Implementation, SampleSource, ScoreSplit
from models_registry.models import ModelVersion, NeuralModel, PerformanceSample, Task


def task_list() -> QuerySet[Task]:
    return Task.objects.all().order_by("slug")


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


def version_latest_sample(*, version: ModelVersion) -> PerformanceSample | None:
    """The version's latest gate evaluation."""
    return (
        PerformanceSample.objects.filter(version=version, source=SampleSource.EVALUATION, split__in=DECISION_SPLITS)
        .order_by("-created_at", "-id")
        .first()
    )

