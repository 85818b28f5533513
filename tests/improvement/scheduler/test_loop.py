"""Configuration, the loop's services, history trimming, and the specification's Python API."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule

from events.models import OutboxEvent
from hormones.models import Hormone
from hormones.services import hormones_ensure
from improvement.choices import RunStatus
from improvement.history import history_trim
from improvement.integration import (
    SelfImprovementConfig,
    SelfImprovementIntegration,
    SelfImprovingNeuralSystem,
)
from improvement.models import CycleRecord, ImprovementConfig, ImprovementRun, LoopState
from improvement.scheduler.cycle import effective_interval_s
from improvement.scheduler.loop import cycle_after_run, cycle_force, loop_start, loop_stop, loop_tick
from improvement.selectors import improvement_status
from improvement.services import config_update
from models_registry.models import ModelVersion
from models_registry.services import model_create
from tests.factories import csv_task, version_with_score

pytestmark = pytest.mark.django_db(transaction=True)


def test_config_defaults_are_the_specifications():
    config = ImprovementConfig.load()
    assert (config.enabled, config.auto_start, config.improvement_interval, config.max_concurrent_improvements,
            config.performance_threshold, config.hormone_driven, config.genetic_enhanced,
            config.cross_model_distillation, config.model_backup_enabled, config.improvement_history_size) == (
        True, True, 300.0, 3, 0.1, True, True, True, True, 1000)


@pytest.mark.parametrize(
    ("field", "value"),
    [("improvement_interval", 0), ("performance_threshold", -0.1), ("max_concurrent_improvements", 0),
     ("improvement_history_size", 0)],
)
def test_invalid_configuration_is_refused_with_the_field_named(field, value):
    with pytest.raises(ValidationError) as excinfo:
        SelfImprovementConfig(**{field: value}).apply()
    assert field in excinfo.value.message_dict
    assert getattr(ImprovementConfig.load(), field) != value


def test_configuration_is_read_fresh_by_every_caller():
    SelfImprovementConfig(improvement_interval=42.0).apply()
    assert ImprovementConfig.objects.get(pk=1).improvement_interval == 42.0


def test_start_stop_and_tick():
    state = loop_start()
    assert state["running"] and Schedule.objects.filter(name="plasticity-tick").exists()
    model = model_create(task=csv_task(), name="m")
    version_with_score(model, 0.5)
    result = loop_tick()
    assert result["cycle"] is not None
    assert ImprovementRun.objects.filter(model=model, strategy="training", status="queued").exists()
    # Not due again until the interval has passed.
    assert loop_tick()["cycle"] is None
    loop_stop()
    LoopState.objects.update(next_cycle_at=timezone.now() - timedelta(seconds=1))
    assert loop_tick()["cycle"] is None and not LoopState.load().running


def test_history_trimming_keeps_referenced_versions():
    model = model_create(task=csv_task(), name="m")
    v1 = version_with_score(model, 0.5)
    v2 = version_with_score(model, 0.6)
    ImprovementConfig.objects.update_or_create(pk=1, defaults={"model_backup_enabled": False})
    old = ImprovementRun.objects.create(model=model, strategy="training", status=RunStatus.PROMOTED,
                                        result_version=v1, finished_at=timezone.now() - timedelta(days=2))
    ModelVersion.objects.filter(pk=v2.pk).update(parent=v1)  # v1 is v2's parent: still referenced
    for i in range(3):
        ImprovementRun.objects.create(model=model, strategy="training", status=RunStatus.REJECTED,
                                      finished_at=timezone.now() - timedelta(minutes=i))
    result = history_trim(keep=3)
    assert result["runs_deleted"] == 1 and not ImprovementRun.objects.filter(pk=old.pk).exists()
    assert ModelVersion.objects.filter(pk=v1.pk).exists() and ModelVersion.objects.filter(pk=v2.pk).exists()
    assert ImprovementRun.objects.count() == 3


def test_the_specifications_snippets_run_and_return_the_documented_shapes():
    model = model_create(task=csv_task(), name="m")
    version_with_score(model, 0.5)

    async def quick_start():
        system = SelfImprovingNeuralSystem(hormone_integration=None, genetic_system=None, hormone_system=None,
                                           brain_state=None)
        started = await system.start_self_improvement_loop()
        forced = await system.force_improvement_cycle()
        stopped = await system.stop_self_improvement_loop()
        return started, forced, stopped

    started, forced, stopped = asyncio.run(quick_start())
    assert started["running"] is True and stopped["running"] is False
    assert {"decisions", "enqueued", "slots"} <= set(forced)

    async def integration_snippets():
        integration = SelfImprovementIntegration(
            enhanced_mcp=None,
            config=SelfImprovementConfig(enabled=True, auto_start=True, hormone_driven=True, genetic_enhanced=True),
        )
        await integration.initialize()
        status = await integration.get_improvement_status()
        history = await integration.get_improvement_history(limit=50)
        health_report = await integration.get_system_health_report()
        export_data = await integration.export_improvement_data()
        return status, history, health_report, export_data

    status, history, health_report, export_data = asyncio.run(integration_snippets())
    assert status["loop"]["running"] is True
    assert {"running", "queued", "counts", "last_cycle"} <= set(status)
    assert isinstance(history, list) and len(history) <= 50
    assert history and {"id", "model", "strategy", "status", "gain"} <= set(history[0])
    assert {"fleet", "models"} <= set(health_report)
    assert {"overall_health", "improvement_efficiency", "system_stability", "learning_rate_per_hour",
            "resource_usage"} <= set(health_report["fleet"])
    assert {"config", "runs", "versions", "hormone_events"} <= set(export_data)
    assert export_data["config"]["improvement_history_size"] == 1000
    assert CycleRecord.objects.exists()


# --------------------------------------------------------------------------- when cycles run


def test_at_rest_the_period_is_exactly_the_configured_interval():
    hormones_ensure()  # every hormone at its baseline
    config = ImprovementConfig.load()
    assert config.improvement_interval == 300.0
    assert effective_interval_s(config) == 300.0
    loop_start()
    assert improvement_status()["loop"]["effective_interval_s"] == 300.0
    model = model_create(task=csv_task(), name="m")
    version_with_score(model, 0.5)  # the training trigger fires: not a calm cycle, serotonin stays at rest
    before = timezone.now()
    cycle_force()
    after = timezone.now()
    state = LoopState.load()
    # The next cycle is due exactly one interval after the cycle's own time (the value it stored),
    # and that time lies within the call: no tolerance that depends on the machine's speed.
    assert before <= state.last_cycle_at <= after
    assert state.next_cycle_at - state.last_cycle_at == timedelta(seconds=300)
    assert before + timedelta(seconds=300) <= state.next_cycle_at <= after + timedelta(seconds=300)


def test_a_calm_streak_stretches_the_period_and_hormones_off_ignore_it():
    hormones_ensure()
    Hormone.objects.filter(name="serotonin").update(level=1.0, updated_at=timezone.now())
    config = ImprovementConfig.load()
    assert effective_interval_s(config) == pytest.approx(600.0, rel=1e-3)  # serotonin 1.0: 2x
    config.hormone_driven = False
    assert effective_interval_s(config) == 300.0


def test_a_slot_filling_cycle_does_not_move_the_next_scheduled_cycle():
    loop_start()
    model = model_create(task=csv_task(), name="m")
    version_with_score(model, 0.5)
    loop_tick()  # the scheduled cycle: sets when the next one is due
    due = LoopState.load().next_cycle_at
    ImprovementRun.objects.filter(model=model).update(status=RunStatus.REJECTED, finished_at=timezone.now())
    assert cycle_after_run() is not None
    state = LoopState.load()
    assert state.next_cycle_at == due
    assert CycleRecord.objects.filter(trigger=CycleRecord.Trigger.SLOT_FREED).count() == 1
    # ... and the tick does not run a scheduled cycle before it is due.
    assert loop_tick()["cycle"] is None


def test_a_slot_filling_cycle_does_nothing_while_the_loop_is_stopped():
    loop_stop()
    assert cycle_after_run() is None
    assert not CycleRecord.objects.exists()


# ------------------------------------------------------------------------------ configuration


def test_initialize_without_a_configuration_keeps_the_operators_settings():
    config_update(improvement_interval=42.0, max_concurrent_improvements=1, auto_start=False)
    asyncio.run(SelfImprovementIntegration().initialize())
    config = ImprovementConfig.load()
    assert (config.improvement_interval, config.max_concurrent_improvements, config.auto_start) == (42.0, 1, False)
    assert not LoopState.load().running  # auto_start is off in the saved configuration


def test_admin_edits_go_through_the_configuration_service(admin_client):
    before = OutboxEvent.objects.filter(type="config.changed").count()
    form = {f.name: getattr(ImprovementConfig.load(), f.name) for f in ImprovementConfig._meta.fields
            if f.name not in ("id", "updated_at")}
    form = {k: ("" if v is None else ("on" if v is True else v)) for k, v in form.items() if v is not False}
    form.update(improvement_interval="77")
    response = admin_client.post(reverse("admin:improvement_improvementconfig_change", args=[1]), form)
    assert response.status_code == 302, response.content[:500]
    assert ImprovementConfig.load().improvement_interval == 77.0
    events = OutboxEvent.objects.filter(type="config.changed").order_by("id")
    assert events.count() == before + 1
    assert events.last().payload["changed"] == {"improvement_interval": 77.0}
