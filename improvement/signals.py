"""Hormone releases that follow improvement outcomes (one place, called by the engine)."""

from __future__ import annotations

from hormones.choices import HormoneName
from hormones.services import hormone_release
from improvement.choices import RunStatus
from improvement.models import ImprovementRun


def run_finished_signals(*, run_id: int, status: str, wall_s: float) -> None:
    run = ImprovementRun.objects.select_related("model__task").get(pk=run_id)
    context = {"run_id": run.pk, "model": str(run.model), "strategy": run.strategy, "wall_s": round(wall_s, 2)}
    if status == RunStatus.PROMOTED:
        gain = max(0.0, run.gain or 0.0)
        hormone_release(name=HormoneName.DOPAMINE, delta=0.1 + 0.3 * min(1.0, gain),
                        cause=f"promotion by run #{run.pk} ({run.strategy}, gain {gain:+.1%})", context=context)
    elif status == RunStatus.REJECTED:
        hormone_release(name=HormoneName.DOPAMINE, delta=-0.03,
                        cause=f"run #{run.pk} ({run.strategy}) rejected", context=context)
    elif status == RunStatus.FAILED:
        hormone_release(name=HormoneName.CORTISOL, delta=0.15,
                        cause=f"run #{run.pk} ({run.strategy}) failed", context=context)
