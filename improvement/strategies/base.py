"""The strategy interface and registry. Pure torch/numpy: no Django import.

A strategy answers two questions:

* ``applies(metrics, triggers)`` — does it apply to a model with these metrics, and why;
* ``build_candidates(context, progress)`` — build candidate modules, reporting progress.

Candidates are *selected* on the validation split inside the strategy; the engine then
judges the chosen one on the held-out test split exactly as it judges the baseline.
Adding a strategy is one new module that calls ``register``; no other strategy changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from models_registry.nn.training import TrainConfig, TrainData

ProgressFn = Callable[[float, str, dict | None], None]
"""progress(fraction 0..1, message, optional curve point) — may raise to cancel."""


@dataclasses.dataclass(frozen=True)
class ModelMetrics:
    """What triggers look at: the active version's measured state and its task's context."""

    score: float | None
    latency_p95_ms: float | None
    latency_budget_ms: float
    n_parameters: int | None = None
    size_bytes: int | None = None
    runtime: str = "torch_fp32"
    teacher_score: float | None = None  # best other implementation of the task (neural or algorithmic)
    genetic_trigger: str | None = None  # evidence of a plateau / drift / data growth, if any
    recent_training_gains: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True)
class Triggers:
    """Thresholds from the configuration (defaults are the specification's)."""

    training_score_below: float = 0.75
    architecture_score_low: float = 0.75
    architecture_score_high: float = 0.85
    distillation_teacher_min_score: float = 0.85
    optimization_latency_ms: float | None = None  # None: each task's own latency budget
    cross_model_distillation: bool = True
    genetic_enhanced: bool = True


@dataclasses.dataclass(frozen=True)
class Applicability:
    applies: bool
    reason: str
    urgency: float = 0.0  # 0..1: how far past the trigger the metrics are


@dataclasses.dataclass
class StrategyContext:
    """Everything a strategy may use. Built by the engine from the database; plain data here."""

    output_kind: str
    input_shape: tuple[int, ...]
    genome: dict
    module: torch.nn.Module  # a private fp32 copy of the active version, free to modify
    data: TrainData
    train_config: TrainConfig
    seed: int = 0
    time_budget_s: float = 240.0
    score_tolerance: float = 0.005
    latency_budget_ms: float = 200.0
    augment: Callable | None = None
    extra_data: Callable[[int], tuple[np.ndarray, np.ndarray] | None] | None = None
    sample_inputs: Callable[[int, np.random.Generator], np.ndarray] | None = None
    teacher_fn: Callable[[torch.Tensor], torch.Tensor] | None = None  # raw outputs of the teacher
    teacher_module: torch.nn.Module | None = None
    teacher_label: str = ""
    # Architecture search fans a generation out to other workers through this, when set.
    evaluate_population: Callable[[list[dict]], list[Any]] | None = None
    mutation_rate: float = 0.3
    population_size: int = 8
    generations: int = 3
    params: dict = dataclasses.field(default_factory=dict)

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3


@dataclasses.dataclass
class Candidate:
    """A candidate implementation: fp32 module + genome, and the runtime it should run on."""

    genome: dict
    module: torch.nn.Module
    runtime: str = "torch_fp32"
    onnx_bytes: bytes | None = None
    note: str = ""
    val_score: float | None = None
    details: dict = dataclasses.field(default_factory=dict)


class Strategy(Protocol):
    name: ClassVar[str]
    objective: ClassVar[str]  # "score" or "latency"
    description: ClassVar[str]

    def applies(self, metrics: ModelMetrics, triggers: Triggers) -> Applicability: ...

    def build_candidates(self, context: StrategyContext, progress: ProgressFn) -> list[Candidate]: ...


_REGISTRY: dict[str, Strategy] = {}


def register(cls: type) -> type:
    instance = cls()
    if instance.name in _REGISTRY:
        raise ValueError(f"strategy {instance.name!r} registered twice")
    _REGISTRY[instance.name] = instance
    return cls


def get_strategy(name: str) -> Strategy:
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown strategy {name!r}; expected one of {', '.join(sorted(_REGISTRY))}") from None


# The specification's order; it is also the plain trigger order used when hormones are off.
TRIGGER_ORDER = ("training", "optimization", "architecture", "distillation")


def all_strategies() -> dict[str, Strategy]:
    """Every registered strategy, the specification's four first in trigger order."""
    _load_all()
    ordered = {name: _REGISTRY[name] for name in TRIGGER_ORDER if name in _REGISTRY}
    ordered.update({name: s for name, s in _REGISTRY.items() if name not in ordered})
    return ordered


def _load_all() -> None:
    # Importing the modules registers them; the order is the plain trigger order.
    from improvement.strategies import architecture, distillation, optimization, training  # noqa: F401
