"""Train one search trial, and run a search in this process with Optuna (ask and tell). No Django.

* ``train_trial`` builds a trial's genome, trains it with the trial's hyperparameters (time-capped)
  and scores it on the validation split: deterministic for a given spec, data and seed, so the
  result does not depend on which worker trains it.
* ``study_sampler`` is the engine's choice: TPE for one objective (the score), NSGA-II for the
  score / latency / size front.
* ``LocalTrialRunner`` runs a whole search in this process with an in-memory study; the shared,
  persistent search of the running system (``improvement.runs.search``) asks the same space
  through a study stored in the database.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import numpy as np
import optuna
import torch

from improvement.nn.search_space import SearchSpace, TrialSpec, suggest
from models_registry.nn.augment import augmentation
from models_registry.nn.evaluation import measure_latency, raw_score, torch_predict_fn
from models_registry.nn.genome import GenomeError, build_module, count_parameters, set_normalisation
from models_registry.nn.kinds import RECONSTRUCTION
from models_registry.nn.training import TrainConfig, TrainData, train_module

optuna.logging.set_verbosity(optuna.logging.WARNING)
# TPE's multivariate/group modes are marked experimental; they are what conditional spaces need.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

Direction = Literal["minimize", "maximize"]
OBJECTIVE_DIRECTIONS: dict[str, Direction] = {"score": "maximize", "latency": "minimize", "size": "minimize"}
#: Random trials before TPE models the space (a study that persists across runs passes them once).
STARTUP_TRIALS = 8


@dataclasses.dataclass
class TrialResult:
    """What one trained trial scored on validation; ``module`` is set when it was trained here."""

    number: int
    spec: TrialSpec | None  # None: the trial's parameters did not make a valid genome
    val_score: float | None
    latency_ms: float | None = None
    n_parameters: int | None = None
    seconds: float = 0.0
    error: str = ""
    module: torch.nn.Module | None = dataclasses.field(default=None, repr=False)
    load_module: Callable[[], torch.nn.Module] | None = dataclasses.field(default=None, repr=False)

    def values(self, objectives: Sequence[str]) -> list[float]:
        by_name = {"score": self.val_score or 0.0, "latency": self.latency_ms or math.inf,
                   "size": float(self.n_parameters or 0)}
        return [by_name[name] for name in objectives]

    def get_module(self) -> torch.nn.Module | None:
        if self.module is None and self.load_module is not None:
            self.module = self.load_module()
        return self.module


def train_trial(spec: TrialSpec, *, data: TrainData, output_kind: str, input_kind: str, metric: str | None,
                seed: int, max_seconds: float, extra_data=None, progress=None, on_best=None,
                start_state: dict[str, torch.Tensor] | None = None) -> TrialResult:
    """Build, train (at most ``max_seconds``) and score one trial on the validation split.

    ``on_best(state, event)`` is called with each new best weights (a checkpoint); training starts
    from ``start_state`` when given (an earlier attempt's checkpoint) instead of fresh weights.
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    module = build_module(spec.genome)
    set_normalisation(module, data.X_train, data.y_train, output_kind)
    if start_state is not None:
        module.load_state_dict(start_state, strict=True)
    config = TrainConfig(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, weight_decay=spec.weight_decay,
                         patience=spec.patience, seed=seed, lr_schedule="cosine", max_seconds=max_seconds,
                         label_smoothing=spec.label_smoothing, metric=metric)
    augment = augmentation(input_kind, spec.augment, spec.augment_strength, X_train=data.X_train) \
        if output_kind != RECONSTRUCTION else None
    train_module(module, data, output_kind=output_kind, config=config, augment=augment, extra_data=extra_data,
                 progress=progress, on_best=on_best)
    return trial_result(spec, module, data=data, output_kind=output_kind, metric=metric,
                        seconds=time.perf_counter() - start)


def trial_result(spec: TrialSpec, module: torch.nn.Module, *, data: TrainData, output_kind: str, metric: str | None,
                 seconds: float) -> TrialResult:
    """A trained module's validation score, latency and size, as a trial's result."""
    module.eval()
    predict = torch_predict_fn(module)
    X_val = np.asarray(data.X_val, dtype=np.float32)
    y_val = data.y_val if output_kind != RECONSTRUCTION else data.X_val
    if y_val is None:
        raise ValueError(f"output_kind {output_kind!r} needs validation targets")
    score = raw_score(output_kind, y_val, predict(X_val), metric)
    latency = measure_latency(predict, X_val[:256], batch_sizes=(1,), warmup=3, repeats=30, max_seconds=0.5)
    return TrialResult(number=-1, spec=spec, val_score=float(score), latency_ms=float(latency["p50_ms_b1"]),
                       n_parameters=count_parameters(module), seconds=seconds, module=module)


def study_sampler(objectives: Sequence[str], *, seed: int) -> optuna.samplers.BaseSampler:
    """TPE for the score alone; NSGA-II for a front of several objectives."""
    if len(objectives) > 1:
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                      n_startup_trials=STARTUP_TRIALS)


def directions(objectives: Sequence[str]) -> list[Direction]:
    unknown = [o for o in objectives if o not in OBJECTIVE_DIRECTIONS]
    if unknown or not objectives or objectives[0] != "score":
        raise ValueError(f"objectives must start with 'score' and name only {', '.join(OBJECTIVE_DIRECTIONS)}")
    return [OBJECTIVE_DIRECTIONS[o] for o in objectives]


def best_of(results: Sequence[TrialResult], objectives: Sequence[str]) -> TrialResult | None:
    """The best trained trial: the highest score (ties: fewer parameters), whatever the objectives.

    With several objectives the search explores the front; what is promoted is still judged on
    score first by the gate (and a faster equal candidate can win there).
    """
    trained = [r for r in results if r.val_score is not None and not r.error]
    if not trained:
        return None
    return max(trained, key=lambda r: (r.val_score or 0.0, -(r.n_parameters or 0)))


class TrialRunner(Protocol):
    """Runs ``n_trials`` trials of a space and returns their results (the strategy picks the best)."""

    def run(self, space: SearchSpace, *, n_trials: int, deadline: float,
            train: Callable[[TrialSpec, int], TrialResult], progress: Callable[[int, int, TrialResult], None],
            ) -> list[TrialResult]: ...


class LocalTrialRunner:
    """An in-memory Optuna study in this process: ask a trial, train it, tell the study."""

    def __init__(self, *, objectives: Sequence[str] = ("score",), seed: int = 0,
                 start_params: dict[str, Any] | None = None,
                 sampler: optuna.samplers.BaseSampler | None = None) -> None:
        self.objectives = tuple(objectives)
        self.seed = seed
        self.start_params = start_params
        self.sampler = sampler  # None: the engine's choice (``study_sampler``); e.g. RandomSampler as a baseline
        self.study: optuna.Study | None = None

    def run(self, space: SearchSpace, *, n_trials: int, deadline: float,
            train: Callable[[TrialSpec, int], TrialResult], progress: Callable[[int, int, TrialResult], None],
            ) -> list[TrialResult]:
        study = optuna.create_study(directions=directions(self.objectives),
                                    sampler=self.sampler or study_sampler(self.objectives, seed=self.seed))
        self.study = study
        if self.start_params:
            study.enqueue_trial(self.start_params, skip_if_exists=True)
        results: list[TrialResult] = []
        for index in range(n_trials):
            if results and time.monotonic() >= deadline:
                break
            trial = study.ask()
            try:
                spec = suggest(trial, space)
            except GenomeError as exc:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                results.append(TrialResult(trial.number, None, None, error=str(exc)))
                continue
            result = train(spec, index)
            result.number = trial.number
            study.tell(trial, result.values(self.objectives))
            results.append(result)
            progress(index + 1, n_trials, result)
        return results
