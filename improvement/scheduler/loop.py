"""Start, stop, tick and force the self-improvement loop (services).

When cycles run — one rule:

* **Scheduled cycles** run every ``improvement_interval`` seconds, counted from the start of
  the previous scheduled (or forced) cycle. With ``hormone_driven`` on, serotonin above its
  baseline (a calm streak) stretches the period up to 2× (``effective_interval_s``); at rest it
  is exactly the configured interval. A django-q2 schedule ticks every minute
  (``improvement.tasks.loop_tick``) and runs the cycle when it is due, so a cycle starts at
  most about a minute (plus the queue's polling) after it is due; intervals shorter than the
  tick run at every tick.
* **A freed slot is filled at once**: when a run ends, its worker enqueues a slot-fill cycle
  (``improvement.tasks.cycle_after_run``) that only hands out free slots; it does not move the
  next scheduled cycle.

Each tick also ends runs whose worker vanished, queues again the task-creation jobs whose worker
vanished, checks each task's recent live inputs for drift against its training split (an alarm
raises adrenaline and fires the genetic drift trigger), records a brain-state snapshot and trims
history.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone
from django_q.models import Schedule

from events.payloads import ConfigChangedPayload
from events.publisher import publish
from hormones.services import brain_state_snapshot, hormones_ensure
from improvement.choices import IN_FLIGHT, RunStatus
from improvement.health import fleet_health_score
from improvement.history import history_trim
from improvement.models import CycleRecord, ImprovementConfig, ImprovementRun, LoopState
from improvement.releases import resource_pressure_signal
from improvement.runs.lifecycle import runs_reconcile
from improvement.scheduler.cycle import cycle_run, cycles_trim, effective_interval_s
from improvement.services import task_algorithms_requeue, task_jobs_requeue
from models_registry.evaluation import versions_rescore_legacy
from models_registry.serving.input_drift import input_drift_check

SCHEDULE_NAME = "plasticity-tick"
LEGACY_RESCORE_PER_TICK = 20


def schedule_ensure() -> None:
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
        publish("config.changed", ConfigChangedPayload(loop="started"))
    return _state_dict(state, config)


def loop_stop() -> dict:
    config = ImprovementConfig.load()
    with transaction.atomic():
        state = LoopState.objects.select_for_update().get_or_create(pk=1)[0]
        state.running = False
        state.stopped_at = timezone.now()
        state.next_cycle_at = None
        state.save()
        publish("config.changed", ConfigChangedPayload(loop="stopped"))
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
    reconciled = runs_reconcile() + task_jobs_requeue() + task_algorithms_requeue()
    # Versions scored before their task had a gate split are re-measured on it, a few per tick.
    rescored = versions_rescore_legacy(limit=LEGACY_RESCORE_PER_TICK)
    config = ImprovementConfig.load()
    state = LoopState.load()
    drifts = inputs_drift_check(config)
    snapshot = brain_state_snapshot(
        queue_length=ImprovementRun.objects.filter(status=RunStatus.QUEUED).count(),
        runs_in_flight=ImprovementRun.objects.filter(status__in=IN_FLIGHT).count(),
        fleet_health=fleet_health_score(),
    )
    resource_pressure_signal(cpu_percent=snapshot.cpu_percent, memory_percent=snapshot.memory_percent)
    cycle = None
    if loop_due(state, config):
        cycle = cycle_run(trigger=CycleRecord.Trigger.SCHEDULE)
    history_trim(keep=config.improvement_history_size)
    cycles_trim()
    return {"reconciled": reconciled, "rescored": rescored, "input_drifts": drifts,
            "cycle": cycle.pk if cycle else None}


def inputs_drift_check(config: ImprovementConfig) -> list[int]:
    """Check the tasks' live inputs for drift with the configured thresholds; the alarms' ids."""
    checks = input_drift_check(threshold=config.drift_psi_threshold, min_rows=config.drift_min_rows,
                               window_rows=config.drift_window_rows, cooldown_s=config.drift_cooldown_s)
    return [c.drift.pk for c in checks if c.drift is not None]


def cycle_after_run() -> CycleRecord | None:
    """A run finished: fill the freed slot now rather than at the next tick."""
    config = ImprovementConfig.load()
    state = LoopState.load()
    if not (state.running and config.enabled):
        return None
    return cycle_run(trigger=CycleRecord.Trigger.SLOT_FREED)


__all__ = ["loop_start", "loop_stop", "loop_boot", "loop_tick", "cycle_force", "cycle_after_run",
           "effective_interval_s"]
