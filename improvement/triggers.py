"""Measure a model and ask every strategy whether it applies (the first half of a cycle)."""

from __future__ import annotations

from improvement.choices import RunStatus, StrategyName
from improvement.models import ImprovementConfig, ImprovementRun
from improvement.strategies import ModelMetrics, Triggers, all_strategies
from models_registry.models import NeuralModel
from models_registry.selectors import algorithm_latest_sample, version_best_in_task


def config_triggers(config: ImprovementConfig) -> Triggers:
    return Triggers(
        training_score_below=config.training_score_below,
        architecture_score_low=config.architecture_score_low,
        architecture_score_high=config.architecture_score_high,
        distillation_teacher_min_score=config.distillation_teacher_min_score,
        optimization_latency_ms=config.optimization_latency_ms,
        cross_model_distillation=config.cross_model_distillation,
        genetic_enhanced=config.genetic_enhanced,
    )


def teacher_score(model: NeuralModel) -> float | None:
    """Best score of another implementation of the model's task (another model or the algorithm)."""
    scores = []
    other = version_best_in_task(task=model.task, exclude_model=model)
    if other is not None and other.score is not None:
        scores.append(other.score)
    algo = algorithm_latest_sample(task=model.task)
    if algo is not None and algo.score is not None:
        scores.append(algo.score)
    return max(scores) if scores else None


def recent_training_gains(model: NeuralModel, *, n: int = 3) -> tuple[float, ...]:
    gains = (
        ImprovementRun.objects.filter(model=model, strategy=StrategyName.TRAINING,
                                      status__in=(RunStatus.PROMOTED, RunStatus.REJECTED))
        .order_by("-finished_at").values_list("gain", flat=True)[:n]
    )
    return tuple(g or 0.0 for g in gains)


def model_metrics(model: NeuralModel, *, genetic_trigger: str | None = None) -> ModelMetrics:
    active = model.versions.filter(is_active=True).first()
    return ModelMetrics(
        score=active.score if active else None,
        latency_p95_ms=active.latency_p95_ms if active else None,
        latency_budget_ms=model.task.latency_budget_ms,
        n_parameters=active.n_parameters if active else None,
        size_bytes=active.size_bytes if active else None,
        runtime=active.runtime if active else "torch_fp32",
        teacher_score=teacher_score(model),
        genetic_trigger=genetic_trigger,
        recent_training_gains=recent_training_gains(model),
    )


def triggered_strategies(
    model: NeuralModel, *, config: ImprovementConfig | None = None, genetic_trigger: str | None = None,
) -> list[tuple[str, str, float]]:
    """(strategy, reason, urgency) for every strategy whose trigger fires, in plain trigger order."""
    config = config or ImprovementConfig.load()
    metrics = model_metrics(model, genetic_trigger=genetic_trigger)
    triggers = config_triggers(config)
    fired = []
    for name, strategy in all_strategies().items():
        verdict = strategy.applies(metrics, triggers)
        if verdict.applies:
            fired.append((name, verdict.reason, verdict.urgency))
    return fired
