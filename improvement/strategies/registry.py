"""The strategy interface and registry. Pure torch/numpy: no Django import.

A strategy is one module in ``improvement/strategies/`` holding one class decorated with
``@register``. The class declares everything the rest of the loop needs to know about it:

* ``name``, ``label``, ``description``, ``order`` (its place in the plain trigger order);
* ``objective`` — what the promotion gate compares: ``score``, ``latency`` or ``size``;
* ``applies(metrics, triggers)`` — its trigger: does it apply to a model, why, how urgently;
* ``hormones`` — a ``HormoneWeighting``: which hormone levels raise or damp its priority;
* ``needs`` — the parts of the run context it uses beyond the basics (``NEED_TEACHER``: the
  best other implementation of the task; ``NEED_SHARED_SEARCH``: a population evaluator that
  fans candidates out to every worker);
* ``roles`` — what the scheduler may ask of it (``ROLE_RETRAIN``: answers drift and new
  data, and its runs measure a training plateau; ``ROLE_EVOLVE``: answers genetic triggers);
* ``explore_drive`` — the hormone that drives it as an exploration when no trigger fires
  (None: it never explores);
* ``run_params(levels)`` — parameters the loop gives its runs at these hormone levels;
* ``fired_release(metrics)`` — the hormone release a cycle makes when its trigger fires;
* ``build_candidates(context, progress)`` — build candidate modules, reporting progress.

Candidates are *selected* on the validation split inside the strategy; the run then judges
the chosen one exactly as it judges the active version.

Adding a strategy is one new module in this package (or a module named in the
``PLASTICITY_STRATEGY_MODULES`` setting): every module here is imported the first time the
registry is read, and the database choices, the API, the CLI, the hormone priorities and the
predictor's features are all derived from what registered.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import pkgutil
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from hormones.priority import HormoneWeighting
from models_registry.nn.training import TrainConfig, TrainData

NEED_TEACHER = "teacher"
NEED_SHARED_SEARCH = "shared_search"
ROLE_RETRAIN = "retrain"
ROLE_EVOLVE = "evolve"
OBJECTIVES = ("score", "latency", "size")

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
    latency_source: str = "evaluation"  # "live": latency_p95_ms is what serving measured lately
    # The task's metric on live feedback of the active version (reported truths), when there is
    # enough of it (PLASTICITY_FEEDBACK_MIN_COUNT reports): the score, its 95 % interval, the reports.
    live_score: float | None = None
    live_score_ci95: tuple[float, float] | None = None
    live_reports: int = 0


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


class Checkpoints(Protocol):
    """Where a strategy keeps what it has built so far, so that a run whose worker died resumes.

    ``load(key)`` answers the weights and notes saved under ``key`` by an earlier attempt of the
    same run (None: nothing saved); ``save(key, state, meta, final=...)`` keeps them (a final
    save marks the phase finished; other saves may be throttled by the store).
    """

    def load(self, key: str) -> tuple[dict[str, torch.Tensor], dict] | None: ...

    def save(self, key: str, state: dict[str, torch.Tensor], meta: dict, *, final: bool = False) -> None: ...


class NoCheckpoints:
    """Checkpoints for a context outside a run (tests, benchmarks): nothing is kept."""

    def load(self, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        return None

    def save(self, key: str, state: dict[str, torch.Tensor], meta: dict, *, final: bool = False) -> None:
        return None


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
    # image | signal | table (models_registry.nn.augment.input_kind): what augmentations and families fit.
    input_kind: str = "table"
    # The architecture search asks its trials through this runner when set (a study shared by every
    # worker and persisted across runs: improvement.runs.search); otherwise it runs one in memory.
    trial_runner: Any | None = None
    params: dict = dataclasses.field(default_factory=dict)
    # The run's checkpoints (improvement.runs.checkpoints): an attempt after a dead worker resumes.
    checkpoints: Checkpoints = dataclasses.field(default_factory=NoCheckpoints)
    # A line for the run's log (what the strategy decided and why); nowhere outside a run.
    log: Callable[[str], None] = dataclasses.field(default=lambda line: None)

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


@dataclasses.dataclass(frozen=True)
class TriggerRelease:
    """A hormone release a cycle makes when a strategy's trigger fires for at least one model.

    ``stress_event`` set: a stress release sized by the hormone-response model (``severity``,
    ``persistence`` in [0, 1]); otherwise a plain release of ``delta`` on ``hormone``.
    """

    cause: str
    hormone: str = ""
    delta: float = 0.0
    stress_event: str = ""
    severity: float = 0.0
    persistence: float = 0.5


class Strategy(Protocol):
    name: ClassVar[str]
    label: ClassVar[str]
    objective: ClassVar[str]
    description: ClassVar[str]
    order: ClassVar[int]
    hormones: ClassVar[HormoneWeighting]
    needs: ClassVar[frozenset[str]]
    roles: ClassVar[frozenset[str]]
    explore_drive: ClassVar[str | None]

    def applies(self, metrics: ModelMetrics, triggers: Triggers) -> Applicability: ...

    def run_params(self, levels: Mapping[str, float]) -> dict: ...

    def fired_release(self, fired: list[ModelMetrics]) -> TriggerRelease | None: ...

    def build_candidates(self, context: StrategyContext, progress: ProgressFn) -> list[Candidate]: ...


class StrategyBase:
    """Defaults for the optional declarations; a strategy subclasses it and overrides what it needs."""

    label: ClassVar[str] = ""
    order: ClassVar[int] = 100
    hormones: ClassVar[HormoneWeighting] = HormoneWeighting()
    needs: ClassVar[frozenset[str]] = frozenset()
    roles: ClassVar[frozenset[str]] = frozenset()
    explore_drive: ClassVar[str | None] = None

    def run_params(self, levels: Mapping[str, float]) -> dict:
        return {}

    def fired_release(self, fired: list[ModelMetrics]) -> TriggerRelease | None:
        return None


_REGISTRY: dict[str, Strategy] = {}
_LOCK = threading.RLock()
_DISCOVERED = False
#: Extra modules to import on discovery, set by the Django app from ``PLASTICITY_STRATEGY_MODULES``.
EXTRA_MODULES: list[str] = []
_NOT_STRATEGIES = {"registry", "common"}


def register(cls: type) -> type:
    """Class decorator: instantiate the strategy and add it to the registry (names are unique)."""
    instance = cls()
    problems = [f"{attr} is missing" for attr in ("name", "objective", "description")
                if not getattr(instance, attr, "")]
    if getattr(instance, "objective", "") and instance.objective not in OBJECTIVES:
        problems.append(f"objective must be one of {', '.join(OBJECTIVES)}")
    if problems:
        raise TypeError(f"strategy {cls.__name__}: {'; '.join(problems)}")
    with _LOCK:
        if instance.name in _REGISTRY and type(_REGISTRY[instance.name]) is not cls:
            raise ValueError(f"strategy {instance.name!r} registered twice")
        _REGISTRY[instance.name] = instance
    return cls


def unregister(name: str) -> None:
    with _LOCK:
        _REGISTRY.pop(name, None)


@contextlib.contextmanager
def registered(cls: type[Strategy]) -> Iterator[Strategy]:
    """Register ``cls`` for the duration of a block (tests and experiments), then remove it."""
    register(cls)
    try:
        yield _REGISTRY[cls.name]
    finally:
        unregister(cls.name)


def discover() -> None:
    """Import every strategy module of this package and of ``EXTRA_MODULES`` (once; later calls are free)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    with _LOCK:
        if _DISCOVERED:
            return
        package = __name__.rpartition(".")[0]
        names = [f"{package}.{info.name}" for info in pkgutil.iter_modules(importlib.import_module(package).__path__)
                 if info.name not in _NOT_STRATEGIES and not info.name.startswith("_")]
        for module in [*names, *EXTRA_MODULES]:
            importlib.import_module(module)
        _DISCOVERED = True


def all_strategies() -> dict[str, Strategy]:
    """Every registered strategy in the plain trigger order (``order``, then name)."""
    discover()
    with _LOCK:
        return {s.name: s for s in sorted(_REGISTRY.values(), key=lambda s: (s.order, s.name))}


def get_strategy(name: str) -> Strategy:
    strategies = all_strategies()
    try:
        return strategies[name]
    except KeyError:
        raise KeyError(f"unknown strategy {name!r}; expected one of {', '.join(strategies)}") from None


def strategy_names() -> tuple[str, ...]:
    return tuple(all_strategies())


def strategy_choices() -> list[tuple[str, str]]:
    """(name, label) pairs: the database field's and the API's choices (a callable, read when needed)."""
    return [(name, s.label or name.title()) for name, s in all_strategies().items()]


def strategy_weightings() -> dict[str, HormoneWeighting]:
    return {name: s.hormones for name, s in all_strategies().items()}


def strategies_with_role(role: str) -> tuple[str, ...]:
    return tuple(name for name, s in all_strategies().items() if role in s.roles)


def first_with_role(role: str) -> str | None:
    names = strategies_with_role(role)
    return names[0] if names else None


def exploration_drives() -> dict[str, str]:
    """Strategy → the hormone that drives it as an exploration, for strategies that explore."""
    return {name: s.explore_drive for name, s in all_strategies().items() if s.explore_drive}
