"""Measure a model and ask every strategy whether it applies (the first half of a cycle)."""

from __future__ import annotations

import dataclasses

from improvement.choices import RunStatus
from improvement.models import ImprovementConfig, ImprovementRun, SearchCandidate
from improvement.strategies.registry import (
    ROLE_RETRAIN,
    ModelMetrics,
    Triggers,
    all_strategies,
    strategies_with_role,
)
from models_registry.choices import Implementation
from models_registry.models import NeuralModel
from models_registry.selectors import teacher_score, version_active, version_live_latency_p95
from models_registry.serving.conf import serving_setting
from models_registry.serving.feedback import feedback_live_score


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


def recent_training_gains(model: NeuralModel, *, n: int = 3) -> tuple[float, ...]:
    """Gains of the model's last ``n`` finished retraining runs (strategies with the retrain role)."""
    gains = (
        ImprovementRun.objects.filter(model=model, strategy__in=strategies_with_role(ROLE_RETRAIN),
                                      status__in=(RunStatus.PROMOTED, RunStatus.REJECTED))
        .order_by("-finished_at").values_list("gain", flat=True)[:n]
    )
    return tuple(g or 0.0 for g in gains)


def model_metrics(model: NeuralModel, *, genetic_trigger: str | None = None) -> ModelMetrics:
    active = version_active(model=model)
    # Serving's own measurement when there was traffic (what users get), else the evaluation's.
    live_p95 = version_live_latency_p95(version=active) if active else None
    # What clients reported about the answers this version gave, once there is enough of it.
    live = (feedback_live_score(task=model.task, implementation=Implementation.NEURAL, version_id=active.pk)
            if active else None)
    if live is not None and live.n < serving_setting("PLASTICITY_FEEDBACK_MIN_COUNT"):
        live = None
    return ModelMetrics(
        score=active.score if active else None,
        latency_p95_ms=live_p95 if live_p95 is not None else (active.latency_p95_ms if active else None),
        latency_source="live" if live_p95 is not None else "evaluation",
        latency_budget_ms=model.task.latency_budget_ms,
        n_parameters=active.n_parameters if active else None,
        size_bytes=active.size_bytes if active else None,
        runtime=active.runtime if active else "torch_fp32",
        teacher_score=teacher_score(model=model),
        genetic_trigger=genetic_trigger,
        recent_training_gains=recent_training_gains(model),
        live_score=live.score if live else None,
        live_score_ci95=(live.low, live.high) if live else None,
        live_reports=live.n if live else 0,
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


@dataclasses.dataclass(frozen=True)
class SearchProgress:
    """How a model's architecture search is going: its trained trials, oldest first."""

    trials: int
    best_score: float | None
    best_trial: int | None  # the best trial's position among the model's trials (1-based)
    since_best: int  # trials trained after the best one

    def stalled(self, patience: int) -> bool:
        return self.trials >= patience and self.since_best >= patience


def search_progress(model: NeuralModel) -> SearchProgress:
    """The model's search so far, from its runs' trials (validation scores), in the order they were asked."""
    scores = list(SearchCandidate.objects.filter(run__model=model, status=SearchCandidate.Status.DONE,
                                                 score__isnull=False).order_by("id").values_list("score", flat=True))
    if not scores:
        return SearchProgress(0, None, None, 0)
    best_index = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return SearchProgress(len(scores), scores[best_index], best_index + 1, len(scores) - best_index - 1)
