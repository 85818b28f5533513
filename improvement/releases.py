"""Hormone releases that follow what the loop sees: run outcomes and resource pressure (one place).

A failed run is a stress event: its cortisol release is sized by the hormone-response task's
serving implementation (``improvement.neural_hormones``), the neural surrogate when serving
says it beats the algorithm.
"""

from __future__ import annotations

from hormones.choices import HormoneName
from hormones.priority import resource_severity
from hormones.services import hormone_release
from improvement.choices import RunStatus
from improvement.models import ImprovementConfig, ImprovementRun
from improvement.neural_hormones import stress_release


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
        budget = float(run.params.get("time_budget_s", ImprovementConfig.load().run_time_budget_s))
        stress_release(event="run_failed", severity=0.6, persistence=min(1.0, wall_s / max(budget, 1.0)),
                       cause=f"run #{run.pk} ({run.strategy}) failed", context=context)


def resource_pressure_signal(*, cpu_percent: float, memory_percent: float) -> None:
    """CPU or memory above 90 %: a stress event sized by the hormone-response model (for the loop's tick)."""
    if max(cpu_percent, memory_percent) > 90:
        stress_release(event="resource_pressure", severity=resource_severity(cpu_percent, memory_percent),
                       persistence=0.5,
                       cause=f"resource pressure: cpu {cpu_percent:.0f}%, memory {memory_percent:.0f}%",
                       context={"cpu_percent": cpu_percent, "memory_percent": memory_percent})
