"""Reads of serving: the state of a task, its switches, and neural vs algorithmic side by side (live feedback too)."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import QuerySet
from django.utils import timezone

from models_registry.choices import Implementation, SampleSource
from models_registry.models import ModelVersion, PerformanceSample, Task
from models_registry.selectors import algorithm_latest_sample, version_best_in_task, version_latest_sample
from models_registry.serving.feedback import feedback_live
from models_registry.serving.models import ServingState, ServingSwitch
from models_registry.serving.switching import serving_measurements


def serving_state_get(*, task: Task) -> ServingState | None:
    return ServingState.objects.select_related("task", "version__model").filter(task=task).first()


def serving_switch_list(*, task: Task | None = None, reason: str | None = None) -> QuerySet[ServingSwitch]:
    """Every recorded switch, newest first."""
    qs = ServingSwitch.objects.select_related("task", "from_version", "to_version").order_by("-created_at", "-id")
    if task is not None:
        qs = qs.filter(task=task)
    if reason:
        qs = qs.filter(reason=reason)
    return qs


def _held_out(sample: PerformanceSample | None, version: ModelVersion | None = None) -> dict | None:
    if sample is None and version is None:
        return None

    def pick(field: str):
        value = getattr(sample, field, None)  # the sample's measurement, else the version's own
        return value if value is not None else getattr(version, field, None)

    return {
        "version_id": version.pk if version else None, "version": version.number if version else None,
        "split": "gate", "score": pick("score"), "metric": pick("metric"), "latency_p50_ms": pick("latency_p50_ms"),
        "latency_p95_ms": pick("latency_p95_ms"),
        "latency_p99_ms": sample.latency_p99_ms if sample is not None else None,
        "measured_at": sample.created_at if sample is not None else None,
    }


def serving_live_summary(*, task: Task, implementation: str, since_s: float = 3600.0) -> dict | None:
    """Live traffic of one implementation over the last ``since_s`` seconds, from flushed windows.

    Counts are exact; percentiles are request-weighted means of the windows' percentiles (an
    approximation: percentiles do not add), next to the latest window's own.
    """
    since = timezone.now() - timedelta(seconds=since_s)
    samples = list(PerformanceSample.objects.filter(
        task=task, implementation=implementation, source=SampleSource.LIVE, created_at__gte=since,
    ).order_by("-created_at", "-id")[:1000])
    if not samples:
        return None
    n = sum(s.n_requests for s in samples)
    errors = sum(s.n_errors for s in samples)

    def weighted(field: str) -> float | None:
        pairs = [(getattr(s, field), s.n_requests) for s in samples if getattr(s, field) is not None]
        weight = sum(w for _, w in pairs)
        return sum(v * w for v, w in pairs) / weight if weight else None

    latest = samples[0]
    return {
        "window_s": since_s, "windows": len(samples), "n_requests": n, "n_errors": errors,
        "error_rate": errors / n if n else 0.0, "latency_p50_ms": weighted("latency_p50_ms"),
        "latency_p95_ms": weighted("latency_p95_ms"), "latency_p99_ms": weighted("latency_p99_ms"),
        "latest": {"at": latest.created_at, "n_requests": latest.n_requests, "n_errors": latest.n_errors,
                   "latency_p50_ms": latest.latency_p50_ms, "latency_p95_ms": latest.latency_p95_ms,
                   "latency_p99_ms": latest.latency_p99_ms, "throughput_per_s": latest.throughput_per_s,
                   "version_id": latest.version_id},
    }


def serving_shadow_summary(*, task: Task, since_s: float = 3600.0) -> dict | None:
    since = timezone.now() - timedelta(seconds=since_s)
    samples = list(PerformanceSample.objects.filter(
        task=task, source=SampleSource.SHADOW, created_at__gte=since,
    ).order_by("-created_at", "-id")[:1000])
    if not samples:
        return None
    latest = next((s for s in samples if s.score is not None), samples[0])
    return {
        "window_s": since_s, "checks": sum(s.n_requests for s in samples),
        "rows": sum(int(s.extra.get("rows", 0)) for s in samples), "agreement": latest.score,
        "floor": latest.extra.get("floor"), "version_id": latest.version_id, "at": latest.created_at,
        "algorithm_p50_ms": latest.extra.get("algorithm_p50_ms"),
    }


def serving_comparison(*, task: Task, since_s: float = 3600.0) -> dict:
    """Neural vs algorithmic for ``task``: held-out (latest evaluation samples), live traffic and feedback.

    The neural side is the version serving (or, while the algorithm serves, the best active
    version: the one a switch would pick).
    """
    state = serving_state_get(task=task)
    version = state.version if state is not None and state.version_id else version_best_in_task(task=task)
    measurements = serving_measurements(task=task, version=version, state=state)
    algo_sample = algorithm_latest_sample(task=task)
    return {
        "floor": measurements.floor,
        "tolerance": measurements.tolerance,
        "latency_budget_ms": task.latency_budget_ms,
        "held_out": {
            "neural": _held_out(version_latest_sample(version=version), version) if version else None,
            "algorithmic": _held_out(algo_sample),
        },
        "live": {
            "neural": serving_live_summary(task=task, implementation=Implementation.NEURAL, since_s=since_s),
            "algorithmic": serving_live_summary(task=task, implementation=Implementation.ALGORITHMIC, since_s=since_s),
        },
        "shadow": serving_shadow_summary(task=task, since_s=since_s),
        "feedback": feedback_live(task=task),
    }
