"""Start, stop, tick and force the self-improvement loop (services).

A django-q2 schedule ticks every minute (``improvement.tasks.loop_tick``). Each tick ends
runs whose worker vanished, records a brain-state snapshot, trims history, and runs a cycle
when the loop is running, enabled, and the effective interval has passed since the last one.
When a run finishes, its worker runs a cycle at once so a freed slot does not sit idle.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from hormones.priority import interval_multiplier
from hormones.selectors import hormone_levels_current
from hormones.services import brain_state_snapshot, hormones_ensure
from improvement.choices import IN_FLIGHT, RunStatus
from improvement.cycle import cycle_run, cycles_trim
from improvement.history import history_trim
from improvement.models import CycleRecord, ImprovementConfig, ImprovementRun, LoopState
from improvement.runs import runs_reconcile
from project.live.publisher import publish

SCHEDULE_NAME = "plasticity-tick"


def effective_interval_s(config: ImprovementConfig, levels: dict[str, float] | None = None) -> float:
    """The configured interval, lengthened by serotonin when the loop is hormone-driven."""
    if not config.hormone_driven:
        return config.improvement_interval
    return config.improvement_interval * interval_multiplier(levels or hormone_levels_current())


def schedule_ensure() -> None:
    from django_q.models import Schedule

    Schedule.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={"func": "improvement.tasks.loop_tick", "schedule_type": Schedule.MINUTES, "minutes": 1,
                  "repeats": -1, "next_run": timezone.now()},
    )


def _state_dict(state: LoopState, config: ImprovementConfig) -> dict:
    return {
        "running": state.running, "enabled": config.enabled,
        "started_at": state.started_at.isoformat() if state.started_at else None,
        "stopped_at": state.stopped_at.isoformat() if state.stopped_at else None,
        "last_cycle_at": state.last_cycle_at.isoformat() if state.last_cycle_at else None,
        "next_cycle_at": state.next_cycle_at.isoformat() if state.next_cycle_at else None,
        "cycles": state.cycles, "effective_interval_s": effective_interval_s(config),
    }


def loop_start() -> dict:
    hormones_ensure()
    config = ImprovementConfig.load()
    with transaction.atomic():
        state = LoopState.objects.select_for_update().get_or_create(pk=1)[0]
        if not state.running:
            state.running = True
            state.started_at = timezone.now()
            state.next_cycle_at = timezone.now()
            state.save()
        schedule_ensure()
        publish("config.changed", {"loop": "started"})
    return _state_dict(state, config)


def loop_stop() -> dict:
    config = ImprovementConfig.load()
    with transaction.atomic():
        state = LoopState.objects.select_for_update().get_or_create(pk=1)[0]
        state.running = False
        state.stopped_at = timezone.now()
        state.next_cycle_at = None
        state.save()
        publish("config.changed", {"loop": "stopped"})
    return _state_dict(state, config)


def loop_boot() -> dict | None:
    """Start the loop at system boot when the configuration says ``auto_start``."""
    config = ImprovementConfig.load()
    if config.auto_start and config.enabled:
        return loop_start()
    schedule_ensure()
    return None


def cycle_force() -> dict:
    record = cycle_run(trigger=CycleRecord.Trigger.FORCED)
    return cycle_record_dict(record)


def cycle_record_dict(record: CycleRecord) -> dict:
    return {
        "id": record.pk, "trigger": record.trigger, "started_at": record.started_at.isoformat(),
        "duration_ms": round(record.duration_ms, 2), "in_flight_before": record.in_flight_before,
        "slots": record.slots, "enqueued": record.enqueued, "hormone_driven": record.hormone_driven,
        "hormone_levels": record.hormone_levels, "weights": record.weights, "decisions": record.decisions,
        "notes": record.notes,
    }


def loop_due(state: LoopState, config: ImprovementConfig) -> bool:
    if not (state.running and config.enabled):
        return False
    return state.next_cycle_at is None or timezone.now() >= state.next_cycle_at


def loop_tick() -> dict:
    """One scheduler tick (every minute)."""
    from improvement.health import fleet_health_score

    reconciled = runs_reconcile()
    config = ImprovementConfig.load()
    state = LoopState.load()
    snapshot = brain_state_snapshot(
        queue_length=ImprovementRun.objects.filter(status=RunStatus.QUEUED).count(),
        runs_in_flight=ImprovementRun.objects.filter(status__in=IN_FLIGHT).count(),
        fleet_health=fleet_health_score(),
    )
    _resource_signals(snapshot)
    cycle = None
    if loop_due(state, config):
        cycle = cycle_run(trigger=CycleRecord.Trigger.SCHEDULE)
    history_trim(keep=config.improvement_history_size)
    cycles_trim()
    return {"reconciled": reconciled, "cycle": cycle.pk if cycle else None}


def cycle_after_run() -> CycleRecord | None:
    """A run finished: fill the freed slot now rather than at the next tick."""
    config = ImprovementConfig.load()
    state = LoopState.load()
    if not (state.running and config.enabled):
        return None
    return cycle_run(trigger=CycleRecord.Trigger.SLOT_FREED)


def _resource_signals(snapshot) -> None:
    """CPU or memory pressure is a stress event, sized by the hormone-response model."""
    from improvement.signals import resource_pressure_signal

    resource_pressure_signal(cpu_percent=snapshot.cpu_percent, memory_percent=snapshot.memory_percent)


def next_cycle_in_s() -> float | None:
    state = LoopState.load()
    if not state.running or state.next_cycle_at is None:
        return None
    return max(0.0, (state.next_cycle_at - timezone.now()).total_seconds())


__all__ = ["loop_start", "loop_stop", "loop_boot", "loop_tick", "cycle_force", "cycle_after_run",
           "effective_interval_s", "next_cycle_in_s"]
