"""The one mapping from hormone levels to the loop's choices (pure functions, no Django import).

Levels are in [0, 1]. Each strategy declares a ``HormoneWeighting`` next to its trigger (see
the strategy modules in ``improvement/strategies/``); its weight multiplies the priority of
every candidate run of that strategy::

    weight = (1 + Σ k·level for hormones that raise it) × Π (1 − k·level for hormones that damp it)

The built-in strategies declare: training raised by adrenaline (1.5, urgency: retrain first);
optimization raised by cortisol (1.5, stress: make things cheaper); architecture raised by
dopamine (1.0, reward widens exploration) and damped by cortisol (0.6, stress defers
expensive search); distillation raised by oxytocin (1.5, bonding: learn from the strong).

Other effects, each in one function here:

* ``search_breadth``: dopamine widens the architecture search, ``0.75 + 0.5·dopamine`` × its trials.
* ``exploration_share``: the share of free slots the loop may spend on exploration when no
  trigger fires, ``0.3 + 0.5·dopamine − 0.3·cortisol`` clipped to [0.1, 1].
* ``exploration_order``: which exploring strategy goes first — the one whose declared drive
  hormone is highest; at a tie the one that learns from a teacher.
* ``interval_multiplier``: serotonin (stability) above its baseline stretches the period of
  scheduled cycles, ``1 + 2·max(0, serotonin − baseline)`` (at most 2×); at rest the period
  is exactly ``improvement_interval``.
* ``model_urgency_boost``: adrenaline attached to one model (a drift) multiplies that model's
  retraining priority by ``1 + 3·adrenaline`` so it jumps the queue.
* ``latency_severity`` / ``resource_severity``: how severe a stress event is, in [0, 1].
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping

from hormones.names import CORTISOL, DOPAMINE, SEROTONIN, baseline


@dataclasses.dataclass(frozen=True)
class HormoneWeighting:
    """How hormone levels weigh one strategy's runs: raised by some hormones, damped by others."""

    raised_by: Mapping[str, float] = dataclasses.field(default_factory=dict)
    damped_by: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def weight(self, levels: Mapping[str, float]) -> float:
        raise_ = 1.0 + sum(k * _level(levels, name) for name, k in self.raised_by.items())
        return raise_ * math.prod(1.0 - k * _level(levels, name) for name, k in self.damped_by.items())


def _level(levels: Mapping[str, float], name: str) -> float:
    return min(1.0, max(0.0, float(levels.get(name, 0.0))))


def strategy_weights(levels: Mapping[str, float], weightings: Mapping[str, HormoneWeighting]) -> dict[str, float]:
    """Each strategy's priority weight at these levels (``weightings`` come from the strategy registry)."""
    return {name: weighting.weight(levels) for name, weighting in weightings.items()}


def search_breadth(levels: Mapping[str, float]) -> float:
    return 0.75 + 0.5 * _level(levels, DOPAMINE)


def exploration_share(levels: Mapping[str, float]) -> float:
    share = 0.3 + 0.5 * _level(levels, DOPAMINE) - 0.3 * _level(levels, CORTISOL)
    return min(1.0, max(0.1, share))


def exploration_order(levels: Mapping[str, float], drives: Mapping[str, str], *,
                      learns_from_teacher: Collection[str] = ()) -> list[str]:
    """Exploring strategies, first choice first: ``drives`` maps each to the hormone that drives it.

    The highest drive level goes first; at a tie a strategy that learns from a teacher goes
    first (a better model exists: copying it is the cheaper way up); then the given order.
    """
    position = {name: i for i, name in enumerate(drives)}
    return sorted(drives, key=lambda name: (-_level(levels, drives[name]), name not in learns_from_teacher,
                                            position[name]))


def interval_multiplier(levels: Mapping[str, float]) -> float:
    return 1.0 + 2.0 * max(0.0, _level(levels, SEROTONIN) - baseline(SEROTONIN))


def model_urgency_boost(adrenaline: float) -> float:
    return 1.0 + 3.0 * min(1.0, max(0.0, adrenaline))


def latency_severity(p95_ms: float | None, budget_ms: float) -> float:
    """p95 latency over its budget: 0 at the budget, 1 at four times it."""
    if not p95_ms or budget_ms <= 0:
        return 0.0
    return min(1.0, max(0.0, (p95_ms / budget_ms - 1.0) / 3.0))


def resource_severity(cpu_percent: float, memory_percent: float) -> float:
    """CPU or memory pressure: 0 at 90 %, 1 at 100 %."""
    return min(1.0, max(0.0, (max(cpu_percent, memory_percent) - 90.0) / 10.0))
