"""Improvement strategies: one module each, one shared interface (see base.py)."""

from improvement.strategies.base import (
    Applicability,
    Candidate,
    ModelMetrics,
    Strategy,
    StrategyContext,
    Triggers,
    all_strategies,
    get_strategy,
)

__all__ = [
    "Applicability", "Candidate", "ModelMetrics", "Strategy", "StrategyContext", "Triggers",
    "all_strategies", "get_strategy",
]
