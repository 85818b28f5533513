"""The one mapping from hormone levels to improvement priorities (pure functions).

Levels are in [0, 1]. Each strategy's weight multiplies the priority of every candidate run
of that strategy:

====================  ==============================================================
strategy              weight
====================  ==============================================================
training              ``1 + 1.5·adrenaline``          urgency: retrain first
optimization          ``1 + 1.5·cortisol``            stress: make things cheaper
architecture          ``(1 + 1.0·dopamine)·(1 − 0.6·cortisol)``
                                                      reward widens exploration; stress
                                                      defers expensive search
distillation          ``1 + 1.5·oxytocin``            bonding: learn from the strong
====================  ==============================================================

Other effects, each in one function here:

* ``mutation_rate``: dopamine widens genetic exploration, ``0.2 + 0.4·dopamine``.
* ``exploration_share``: the share of free slots the loop may spend on exploration when no
  trigger fires, ``0.3 + 0.5·dopamine − 0.3·cortisol`` clipped to [0.1, 1].
* ``interval_multiplier``: serotonin (stability) lengthens the effective interval,
  ``1 + serotonin`` — long calm periods mean less churn.
* ``model_urgency_boost``: adrenaline attached to one model (a drift) multiplies that model's
  retraining priority by ``1 + 3·adrenaline`` so it jumps the queue.
"""

from __future__ import annotations

STRATEGIES = ("training", "optimization", "architecture", "distillation")


def _level(levels: dict[str, float], name: str) -> float:
    return min(1.0, max(0.0, float(levels.get(name, 0.0))))


def strategy_weights(levels: dict[str, float]) -> dict[str, float]:
    dopamine = _level(levels, "dopamine")
    cortisol = _level(levels, "cortisol")
    adrenaline = _level(levels, "adrenaline")
    oxytocin = _level(levels, "oxytocin")
    return {
        "training": 1.0 + 1.5 * adrenaline,
        "optimization": 1.0 + 1.5 * cortisol,
        "architecture": (1.0 + 1.0 * dopamine) * (1.0 - 0.6 * cortisol),
        "distillation": 1.0 + 1.5 * oxytocin,
    }


def mutation_rate(levels: dict[str, float]) -> float:
    return 0.2 + 0.4 * _level(levels, "dopamine")


def exploration_share(levels: dict[str, float]) -> float:
    share = 0.3 + 0.5 * _level(levels, "dopamine") - 0.3 * _level(levels, "cortisol")
    return min(1.0, max(0.1, share))


def interval_multiplier(levels: dict[str, float]) -> float:
    return 1.0 + _level(levels, "serotonin")


def model_urgency_boost(adrenaline: float) -> float:
    return 1.0 + 3.0 * min(1.0, max(0.0, adrenaline))


def exploration_strategy(levels: dict[str, float], *, has_better_teacher: bool) -> str:
    """When no trigger fires: distil if a better teacher exists and bonding outweighs reward."""
    if has_better_teacher and _level(levels, "oxytocin") >= _level(levels, "dopamine"):
        return "distillation"
    return "architecture"
