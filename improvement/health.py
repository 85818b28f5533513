"""The health report, per model and for the fleet.

Scores are named by their split: ``gate_score`` (what decisions compare; the health formula uses
it) and ``test_score`` (the sealed split, reported beside it, read by no decision).

Every metric is a small pure function over plain numbers (tested on hand-built histories);
``system_health_report`` gathers the numbers from the database.

* improvement efficiency — ``mean_gain``: mean gain of promoted runs;
  ``gain_per_cpu_second``: the sum of promoted gains divided by the CPU-seconds of all
  finished runs (rejected and failed runs cost CPU too).
* system stability — the success rate (promoted / finished) is computed in consecutive
  windows of ``window`` runs; stability = 1 − std(rates) / 0.5, clipped to [0, 1] (0.5 is the
  largest possible standard deviation of a rate). One window or fewer: 1.0.
* learning rate — least-squares slope of the running-best gate score against time, in score per
  hour (0.0 with fewer than two points).
* overall health — ``0.5·mean gate score + 0.2·success rate + 0.15·stability + 0.15·(1 − resource pressure)``
  where resource pressure = max(cpu %, memory %) / 100.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence

from improvement.choices import FINISHED, RunStatus
from improvement.models import ImprovementRun
from models_registry.models import ModelVersion, NeuralModel
from models_registry.selectors import version_active

WINDOW = 10


def mean_gain(gains: Sequence[float]) -> float:
    return sum(gains) / len(gains) if gains else 0.0


def gain_per_cpu_second(promoted_gains: Sequence[float], cpu_seconds: Sequence[float]) -> float:
    total_cpu = sum(cpu_seconds)
    return sum(promoted_gains) / total_cpu if total_cpu > 0 else 0.0


def success_rate(statuses: Sequence[str]) -> float:
    return sum(s == RunStatus.PROMOTED for s in statuses) / len(statuses) if statuses else 0.0


def stability(statuses: Sequence[str], *, window: int = WINDOW) -> float:
    """``statuses`` oldest first; only whole windows count."""
    rates = [success_rate(statuses[i:i + window]) for i in range(0, len(statuses) - window + 1, window)]
    if len(rates) < 2:
        return 1.0
    return min(1.0, max(0.0, 1.0 - statistics.pstdev(rates) / 0.5))


def learning_rate(points: Sequence[tuple[float, float]]) -> float:
    """``points``: (hours, score), oldest first. Slope of the running best, score per hour."""
    if len(points) < 2:
        return 0.0
    best = []
    running = float("-inf")
    for _, score in points:
        running = max(running, score)
        best.append(running)
    xs = [p[0] for p in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(best) / len(best)
    var = sum((x - mean_x) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, best, strict=True)) / var


def overall_health(*, mean_score: float, success: float, stable: float, pressure: float) -> float:
    value = 0.5 * mean_score + 0.2 * success + 0.15 * stable + 0.15 * (1.0 - pressure)
    return round(min(1.0, max(0.0, value)), 6)


# ---------------------------------------------------------------------------- from the DB


def _runs_summary(runs: list[dict]) -> dict:
    statuses = [r["status"] for r in runs]
    promoted = [r["gain"] or 0.0 for r in runs if r["status"] == RunStatus.PROMOTED]
    cpu = [r["cpu_seconds"] or 0.0 for r in runs]
    return {
        "finished_runs": len(runs), "promoted": len(promoted),
        "rejected": statuses.count(RunStatus.REJECTED), "failed": statuses.count(RunStatus.FAILED),
        "success_rate": round(success_rate(statuses), 6),
        "improvement_efficiency": {"mean_gain": round(mean_gain(promoted), 6),
                                   "gain_per_cpu_second": round(gain_per_cpu_second(promoted, cpu), 8)},
        "system_stability": round(stability(statuses), 6),
        "cpu_seconds": round(sum(cpu), 3),
        "mean_peak_memory_mb": round(mean_gain([r["peak_memory_mb"] or 0.0 for r in runs]), 2) if runs else 0.0,
    }


RUN_FIELDS = ("status", "gain", "cpu_seconds", "peak_memory_mb")


def _points(versions: Sequence[tuple]) -> list[tuple[float, float]]:
    """(created_at, score) of scored versions, oldest first → (hours since the first, score)."""
    if not versions:
        return []
    t0 = versions[0][0]
    return [((t - t0).total_seconds() / 3600.0, s) for t, s in versions]


def _score_points(model: NeuralModel) -> list[tuple[float, float]]:
    return _points(list(ModelVersion.objects.filter(model=model, score__isnull=False).order_by("created_at")
                        .values_list("created_at", "score")))


def _model_entry(model: NeuralModel, *, runs: list[dict], score: float | None,
                 points: list[tuple[float, float]], pressure: float, test_score: float | None = None) -> dict:
    summary = _runs_summary(runs)
    score = score if score is not None else 0.0
    summary.update({
        "model": str(model), "model_id": model.pk, "gate_score": score, "test_score": test_score,
        "learning_rate_per_hour": round(learning_rate(points), 6),
        "overall_health": overall_health(mean_score=score, success=summary["success_rate"],
                                         stable=summary["system_stability"], pressure=pressure),
    })
    return summary


def model_health(model: NeuralModel, *, pressure: float) -> dict:
    runs = list(ImprovementRun.objects.filter(model=model, status__in=FINISHED).order_by("finished_at")
                .values(*RUN_FIELDS))
    active = version_active(model=model)
    return _model_entry(model, runs=runs, score=active.score if active else None, points=_score_points(model),
                        pressure=pressure, test_score=active.test_score if active else None)


def resource_usage() -> dict:
    import psutil

    memory = psutil.virtual_memory()
    return {"cpu_percent": psutil.cpu_percent(interval=None), "memory_percent": memory.percent,
            "memory_used_mb": round((memory.total - memory.available) / 2**20, 1),
            "process_rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1)}


def system_health_report() -> dict:
    """The fleet's and every model's health from three queries, whatever the number of models.

    The finished runs, the active versions' scores and the scored versions are each read once
    for the whole fleet and grouped by model here (one query per model made the overview's
    cost grow with the fleet).
    """
    resources = resource_usage()
    pressure = max(resources["cpu_percent"], resources["memory_percent"]) / 100.0
    runs = list(ImprovementRun.objects.filter(status__in=FINISHED).order_by("finished_at")
                .values("model_id", *RUN_FIELDS))
    runs_of: dict[int, list[dict]] = defaultdict(list)
    for run in runs:
        runs_of[run["model_id"]].append(run)
    active = {model_id: (score, test) for model_id, score, test in
              ModelVersion.objects.filter(is_active=True).values_list("model_id", "score", "test_score")}
    scored: dict[int, list[tuple]] = defaultdict(list)
    for model_id, created_at, score in (ModelVersion.objects.filter(score__isnull=False).order_by("created_at")
                                        .values_list("model_id", "created_at", "score")):
        scored[model_id].append((created_at, score))
    models = [
        _model_entry(m, runs=runs_of.get(m.pk, []), score=active.get(m.pk, (None, None))[0],
                     test_score=active.get(m.pk, (None, None))[1], points=_points(scored.get(m.pk, [])),
                     pressure=pressure)
        for m in NeuralModel.objects.select_related("task").order_by("pk")
    ]
    fleet = _runs_summary(runs)
    mean_score = mean_gain([m["gate_score"] for m in models])
    tested = [m["test_score"] for m in models if m["test_score"] is not None]
    fleet.update({
        "models": len(models), "mean_gate_score": round(mean_score, 6),
        "mean_test_score": round(mean_gain(tested), 6) if tested else None,
        "learning_rate_per_hour": round(mean_gain([m["learning_rate_per_hour"] for m in models]), 6),
        "overall_health": overall_health(mean_score=mean_score, success=fleet["success_rate"],
                                         stable=fleet["system_stability"], pressure=pressure),
        "resource_usage": resources,
    })
    return {"fleet": fleet, "models": models, "formulas": __doc__}


def fleet_health_score() -> float:
    return system_health_report()["fleet"]["overall_health"]
