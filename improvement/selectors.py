"""Reads of the improvement app: status, history, runs as plain dicts."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, QuerySet
from django.utils import timezone

from improvement.choices import RunStatus
from improvement.models import CycleRecord, ImprovementConfig, ImprovementRun, LoopState
from improvement.scheduler.cycle import effective_interval_s


def run_dict(run: ImprovementRun, *, full: bool = False) -> dict:
    data = {
        "id": run.pk, "model_id": run.model_id, "model": str(run.model), "task": run.model.task.slug,
        "strategy": run.strategy, "status": run.status, "origin": run.origin,
        "trigger_reason": run.trigger_reason, "priority": run.priority, "progress": run.progress,
        "progress_message": run.progress_message, "gain": run.gain, "decision": run.decision,
        "objective": run.objective,
        "baseline_version_id": run.baseline_version_id, "result_version_id": run.result_version_id,
        "baseline_gate_score": (run.baseline_metrics or {}).get("score"),
        "candidate_gate_score": (run.candidate_metrics or {}).get("score"),
        "created_at": run.created_at.isoformat() if run.created_at else None,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "duration_s": run.duration_s, "cpu_seconds": run.cpu_seconds, "peak_memory_mb": run.peak_memory_mb,
        "attempts": run.attempts, "error": run.error[:500] if run.error else "",
    }
    if full:
        data.update({"baseline_metrics": run.baseline_metrics, "candidate_metrics": run.candidate_metrics,
                     "curve": run.curve, "log": run.log, "params": run.params})
    return data


def runs_query(
    *, model_id: int | None = None, task: str | None = None, strategy: str | None = None,
    status: str | None = None, since: datetime | None = None, until: datetime | None = None,
) -> QuerySet[ImprovementRun]:
    qs = ImprovementRun.objects.select_related("model__task").order_by("-created_at", "-id")
    if model_id is not None:
        qs = qs.filter(model_id=model_id)
    if task:
        qs = qs.filter(model__task__slug=task)
    if strategy:
        qs = qs.filter(strategy=strategy)
    if status:
        qs = qs.filter(status=status)
    if since:
        qs = qs.filter(created_at__gte=since)
    if until:
        qs = qs.filter(created_at__lte=until)
    return qs


def improvement_history(*, limit: int = 50, **filters) -> list[dict]:
    return [run_dict(run) for run in runs_query(**filters)[: max(0, int(limit))]]


def improvement_status() -> dict:
    """What is running (with progress), what is queued, when the next cycle is, the last cycle's decisions."""
    config = ImprovementConfig.load()
    state = LoopState.load()
    running = [run_dict(r) for r in runs_query(status=RunStatus.RUNNING)]
    queued = [run_dict(r) for r in runs_query(status=RunStatus.QUEUED).order_by("-priority", "created_at")]
    last_cycle = CycleRecord.objects.order_by("-started_at", "-id").first()
    counts = dict(ImprovementRun.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    return {
        "loop": {
            "running": state.running, "enabled": config.enabled, "auto_start": config.auto_start,
            "started_at": state.started_at.isoformat() if state.started_at else None,
            "last_cycle_at": state.last_cycle_at.isoformat() if state.last_cycle_at else None,
            "next_cycle_at": state.next_cycle_at.isoformat() if state.running and state.next_cycle_at else None,
            "next_cycle_in_s": next_cycle_in_s(state), "cycles": state.cycles,
            "improvement_interval": config.improvement_interval,
            "effective_interval_s": effective_interval_s(config),
            "max_concurrent_improvements": config.max_concurrent_improvements,
        },
        "running": running,
        "queued": queued,
        "counts": {status: counts.get(status, 0) for status in RunStatus.values},
        "last_cycle": None if last_cycle is None else {
            "id": last_cycle.pk, "trigger": last_cycle.trigger, "started_at": last_cycle.started_at.isoformat(),
            "slots": last_cycle.slots, "enqueued": last_cycle.enqueued, "in_flight_before": last_cycle.in_flight_before,
            "hormone_driven": last_cycle.hormone_driven, "weights": last_cycle.weights,
            "decisions": last_cycle.decisions, "notes": last_cycle.notes,
        },
    }


def next_cycle_in_s(state: LoopState | None = None) -> float | None:
    """Seconds until the next scheduled cycle is due (None while the loop is stopped)."""
    state = state or LoopState.load()
    if not state.running or state.next_cycle_at is None:
        return None
    return max(0.0, (state.next_cycle_at - timezone.now()).total_seconds())
