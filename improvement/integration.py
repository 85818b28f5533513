"""The specification's Python API, as thin async facades over Plasticity's services.

The same services back the REST API and the control panel::

    from improvement.integration import (
        SelfImprovementConfig, SelfImprovementIntegration, SelfImprovingNeuralSystem,
    )

    system = SelfImprovingNeuralSystem(hormone_integration=None, genetic_system=None,
                                       hormone_system=None, brain_state=None)
    await system.start_self_improvement_loop()
    await system.force_improvement_cycle()

    integration = SelfImprovementIntegration(enhanced_mcp=None, config=SelfImprovementConfig(
        enabled=True, auto_start=True, hormone_driven=True, genetic_enhanced=True))
    await integration.initialize()
    status = await integration.get_improvement_status()
    history = await integration.get_improvement_history(limit=50)
    health_report = await integration.get_system_health_report()
    export_data = await integration.export_improvement_data()

Arguments of the specification that name parts of another system are optional and map onto
Plasticity's own parts: ``hormone_integration`` / ``hormone_system`` → the ``hormones`` app,
``genetic_system`` → genetic triggers (``improvement.scheduler.genetic_triggers``), ``brain_state`` → brain-state
snapshots, ``enhanced_mcp`` → this Django project. Passing objects there is accepted and
kept on the instance for callers that want them back; Plasticity does not call into them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import F

from hormones.models import HormoneEvent
from hormones.services import hormones_ensure
from improvement.export import json_rows
from improvement.health import system_health_report
from improvement.models import ImprovementConfig, ImprovementRun
from improvement.scheduler.loop import cycle_force, loop_start, loop_stop, schedule_ensure
from improvement.selectors import improvement_history, improvement_status
from improvement.services import config_update
from models_registry.models import ModelVersion

SEED_FIELDS = (
    "enabled", "auto_start", "improvement_interval", "max_concurrent_improvements", "performance_threshold",
    "hormone_driven", "genetic_enhanced", "cross_model_distillation", "model_backup_enabled",
    "improvement_history_size",
)


@dataclasses.dataclass
class SelfImprovementConfig:
    """The specification's configuration; ``apply()`` validates it and stores it in the database."""

    enabled: bool = True
    auto_start: bool = True
    improvement_interval: float = 300.0  # 5 minutes
    max_concurrent_improvements: int = 3
    performance_threshold: float = 0.1  # 10% improvement required
    hormone_driven: bool = True
    genetic_enhanced: bool = True
    cross_model_distillation: bool = True
    model_backup_enabled: bool = True
    improvement_history_size: int = 1000

    @classmethod
    def from_db(cls) -> SelfImprovementConfig:
        row = ImprovementConfig.load()
        return cls(**{name: getattr(row, name) for name in SEED_FIELDS})

    def apply(self) -> ImprovementConfig:
        """Validate and save; raises ``django.core.exceptions.ValidationError`` naming bad fields."""
        return config_update(**dataclasses.asdict(self))


class SelfImprovingNeuralSystem:
    """Start, stop and force the self-improvement loop."""

    def __init__(self, hormone_integration: Any = None, genetic_system: Any = None, hormone_system: Any = None,
                 brain_state: Any = None, config: SelfImprovementConfig | None = None) -> None:
        self.hormone_integration = hormone_integration
        self.genetic_system = genetic_system
        self.hormone_system = hormone_system
        self.brain_state = brain_state
        self.config = config

    async def start_self_improvement_loop(self) -> dict:
        if self.config is not None:
            await sync_to_async(self.config.apply)()
        return await sync_to_async(loop_start)()

    async def stop_self_improvement_loop(self) -> dict:
        return await sync_to_async(loop_stop)()

    async def force_improvement_cycle(self) -> dict:
        return await sync_to_async(cycle_force)()


class SelfImprovementIntegration:
    """Configuration, status, history, health report and export."""

    def __init__(self, enhanced_mcp: Any = None, config: SelfImprovementConfig | None = None) -> None:
        self.enhanced_mcp = enhanced_mcp
        # None: use the configuration saved in the database (an operator's edits are kept).
        self.config = config
        self.system = SelfImprovingNeuralSystem(config=None)

    async def initialize(self) -> dict:
        """Store the given configuration (if any), create the hormones, and start the loop when ``auto_start``.

        Without a configuration the saved one is used as it is: initializing never resets an
        operator's settings to the defaults.
        """
        if self.config is not None:
            await sync_to_async(self.config.apply)()
        config = await sync_to_async(SelfImprovementConfig.from_db)()
        await sync_to_async(hormones_ensure)()
        if config.enabled and config.auto_start:
            return await sync_to_async(loop_start)()
        await sync_to_async(schedule_ensure)()
        return {"running": False, "enabled": config.enabled}

    async def get_improvement_status(self) -> dict:
        return await sync_to_async(improvement_status)()

    async def get_improvement_history(self, limit: int = 50) -> list[dict]:
        return await sync_to_async(improvement_history)(limit=limit)

    async def get_system_health_report(self) -> dict:
        return await sync_to_async(system_health_report)()

    async def export_improvement_data(self) -> dict:
        return await sync_to_async(export_improvement_data)()


def export_improvement_data() -> dict:
    """Everything needed to analyse the loop offline, as JSON-serialisable data."""
    versions = list(ModelVersion.objects.select_related("model__task").order_by("id").values(
        "id", "model_id", "model__name", "model__task__slug", "number", "runtime", "is_active", "metric",
        "score_split", "test_score", "test_ci95_low", "test_ci95_high", "latency_p50_ms", "latency_p95_ms",
        "latency_p95_ms_batch", "n_parameters", "size_bytes", "parent_id", "genome", "weights_sha256", "created_at",
        gate_score=F("score"),
    ))
    events = list(HormoneEvent.objects.select_related("hormone").order_by("id").values(
        "id", "hormone__name", "delta", "level_before", "level_after", "cause", "created_at"))
    data = {
        "config": dataclasses.asdict(SelfImprovementConfig.from_db()),
        # The same run rows as the REST export (GET /api/export), oldest first.
        "runs": [json.loads(row) for row in json_rows(ImprovementRun.objects.all())],
        "versions": versions,
        "hormone_events": events,
    }
    # Round-trip through JSON so every value (datetimes included) is plain data; NaN and
    # infinities become null so the result is valid JSON for any consumer.
    return json.loads(json.dumps(_finite(data), default=_iso, allow_nan=False))


def _iso(value) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
