"""The architecture search's engine: Optuna (the product's) against the genetic search it replaced.

Two tasks — the digits (8×8 images) and generated 1-D signals in 10 classes
(``bench.datasets.signal_classes``) — split by the product's ``make_splits``; several seeds. Both
engines start from the same weak parent genome, get the same wall-clock budget per search
(``BUDGET_S``) and the same cap per candidate (``TRIAL_S``), one torch thread each, and pick their
best candidate on the validation split; that candidate is scored on the sealed test split.

* **optuna** — ``improvement.nn.trials.LocalTrialRunner`` over ``improvement.nn.search_space``
  (genome families for the input kind, training hyperparameters, augmentation): what the
  architecture strategy runs.
* **genetic** — ``improvement.nn.evolution.evolve`` (mutation, crossover, Pareto ranking, ageing)
  with its own candidate trainer (weights inherited from the parent, cosine schedule) and the
  task's default augmentation (a pixel shift for images, a roll for signals).

Target: Optuna's mean test accuracy at least the genetic search's on both tasks.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import torch

from bench.common import target

NAME = "search"
DESCRIPTION = "architecture search engine: Optuna (TPE over families and training settings) vs the old genetic search"

SEEDS = tuple(int(v) for v in os.environ.get("BENCH_SEARCH_SEEDS", "0,1,2").split(","))
BUDGET_S = float(os.environ.get("BENCH_SEARCH_BUDGET_S", "90"))
TRIAL_S = 8.0
TASKS = ("digits", "signals")


@dataclasses.dataclass(frozen=True)
class Data:
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    input_kind: str
    n_classes: int


def _data(task: str) -> Data:
    from bench.common import _digits_arrays
    from bench.datasets import signal_classes
    from models_registry.data.splits import make_splits

    if task == "digits":
        X, y, _ = _digits_arrays()
        kind = "image"
    else:
        X, y = signal_classes(3000, seed=11)
        kind = "signal"
    s = make_splits(len(y), y=y, stratify=True, seed=0)
    return Data(X[s["train"]], y[s["train"]], X[s["val"]], y[s["val"]], X[s["test"]], y[s["test"]], kind,
                int(y.max()) + 1)


def _parent(data: Data) -> dict:
    """The same weak start for both engines: an MLP with 8 hidden units."""
    return {"kind": "mlp", "input_shape": list(data.X_train.shape[1:]), "output_dim": data.n_classes,
            "hidden": [8], "activation": "relu", "dropout": 0.0, "norm": "none"}


def _accuracy(module: torch.nn.Module, X: np.ndarray, y: np.ndarray) -> float:
    module.eval()
    with torch.no_grad():
        return float((module(torch.from_numpy(X)).argmax(1).numpy() == y).mean())


def _optuna(task: str, seed: int) -> dict:
    from improvement.nn.search_space import SearchSpace, genome_params
    from improvement.nn.trials import LocalTrialRunner, best_of, train_trial
    from models_registry.nn.training import TrainData

    data = _data(task)
    space = SearchSpace(tuple(data.X_train.shape[1:]), "classes", data.n_classes, data.input_kind)
    train_data = TrainData(data.X_train, data.y_train, data.X_val, data.y_val)
    deadline = time.monotonic() + BUDGET_S

    def train(spec, index):
        cap = max(1.0, min(TRIAL_S, deadline - time.monotonic()))
        return train_trial(spec, data=train_data, output_kind="classes", input_kind=data.input_kind,
                           metric="accuracy", seed=seed * 1000 + index, max_seconds=cap)

    runner = LocalTrialRunner(seed=seed, start_params=genome_params(_parent(data), space))
    results = runner.run(space, n_trials=10_000, deadline=deadline, train=train, progress=lambda *a: None)
    best = best_of(results, ("score",))
    assert best is not None and best.spec is not None
    module = best.get_module()
    assert module is not None
    return {"engine": "optuna", "task": task, "seed": seed, "trials": len(results), "val": best.val_score,
            "test": _accuracy(module, data.X_test, data.y_test), "best_kind": best.spec.genome["kind"]}


def _genetic(task: str, seed: int) -> dict:
    from improvement.nn.evolution import Individual, SearchConfig, evolve, train_genome_candidate
    from models_registry.nn.augment import augmentation
    from models_registry.nn.genome import build_module, set_normalisation
    from models_registry.nn.training import TrainConfig, TrainData, shift_augment, train_module

    data = _data(task)
    train_data = TrainData(data.X_train, data.y_train, data.X_val, data.y_val)
    parent = _parent(data)
    # The task's default augmentation (models_registry.training.task_augment), as the loop gives it.
    augment = augmentation("signal", "shift", 0.5) if data.input_kind == "signal" else shift_augment(1)
    torch.manual_seed(seed)
    parent_module = build_module(parent)
    set_normalisation(parent_module, data.X_train, data.y_train, "classes")
    train_module(parent_module, train_data, output_kind="classes", config=TrainConfig(epochs=3, seed=seed))
    parent_state = {k: v.detach().clone() for k, v in parent_module.state_dict().items()}
    deadline = time.monotonic() + BUDGET_S
    counter = {"n": 0}
    modules: dict[int, torch.nn.Module] = {}

    def evaluate(genomes: list[dict]) -> list[Individual]:
        out = []
        for genome in genomes:
            left = deadline - time.monotonic()
            if left <= 0:
                out.append(Individual(genome=genome, score=None, error="budget spent"))
                continue
            config = TrainConfig(epochs=60, lr_schedule="cosine", seed=seed * 1000 + counter["n"],
                                 max_seconds=max(1.0, min(TRIAL_S, left)), metric="accuracy")
            result = train_genome_candidate(genome, parent_state=parent_state, data=train_data, output_kind="classes",
                                            config=config, augment=augment)
            counter["n"] += 1
            individual = Individual(genome=genome, score=result.val_score, latency_ms=result.latency_ms,
                                    n_parameters=result.n_parameters)
            modules[id(individual)] = result.module
            out.append(individual)
        return out

    result = evolve(parent, evaluate, SearchConfig(population_size=6, generations=200, seed=seed,
                                                   family_jump=0.5 if data.input_kind == "image" else 0.1))
    trained = [i for i in result.history if i.score is not None and id(i) in modules]
    best = max(trained, key=lambda i: (i.score or 0.0, -(i.n_parameters or 0)))
    return {"engine": "genetic", "task": task, "seed": seed, "trials": counter["n"], "val": best.score,
            "test": _accuracy(modules[id(best)], data.X_test, data.y_test), "best_kind": best.genome["kind"]}


def _search(job: tuple[str, str, int]) -> dict:
    torch.set_num_threads(1)
    engine, task, seed = job
    start = time.process_time()
    outcome = _optuna(task, seed) if engine == "optuna" else _genetic(task, seed)
    outcome["cpu_seconds"] = round(time.process_time() - start, 1)
    return outcome


def _ci95(values: list[float]) -> list[float]:
    if len(values) < 2:
        return [values[0], values[0]] if values else [math.nan, math.nan]
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values))
    return [round(statistics.mean(values) - half, 4), round(statistics.mean(values) + half, 4)]


def run() -> dict[str, Any]:
    jobs = [(engine, task, seed) for task in TASKS for seed in SEEDS for engine in ("optuna", "genetic")]
    with ProcessPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(_search, jobs))
    summary, targets = [], []
    for task in TASKS:
        row: dict[str, Any] = {"task": task}
        means = {}
        for engine in ("optuna", "genetic"):
            tests = [o["test"] for o in outcomes if o["task"] == task and o["engine"] == engine]
            trials = [o["trials"] for o in outcomes if o["task"] == task and o["engine"] == engine]
            kinds = sorted({o["best_kind"] for o in outcomes if o["task"] == task and o["engine"] == engine})
            means[engine] = statistics.mean(tests)
            row.update({f"{engine} test": round(means[engine], 4), f"{engine} 95% CI": _ci95(tests),
                        f"{engine} trials": round(statistics.mean(trials), 1), f"{engine} best kinds": kinds})
        summary.append(row)
        targets.append(target(f"{task}: Optuna's mean test accuracy ≥ the genetic search's", "≥",
                              round(means["optuna"] - means["genetic"], 4), means["optuna"] >= means["genetic"]))
    return {"seeds": list(SEEDS), "budget_s": BUDGET_S, "trial_s": TRIAL_S, "table": summary,
            "tables": {"every search": outcomes}, "targets": targets}
