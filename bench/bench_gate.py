"""The promotion gate: how often it promotes a candidate with no real gain, and how often a real one.

Five tasks, three built in and two generated "uploads" (an imbalanced binary table and a
regression table), each split by the product's own ``make_splits`` (train / validation / gate /
sealed test). On each task:

* **null candidates** — the active version and the candidate are the same genome trained the
  same way on the same rows, with different seeds: no real improvement exists, so every
  promotion is a false one. ``N_NULL`` disjoint pairs per task (200 in all).
* **real candidates** — the same genome and seed trained for a fraction of the epochs (the
  active version: 5, 15, 30 or 50 % of them, in turn) and for all of them (the candidate): a
  real improvement of varied size (its true size measured as below, never read by either gate).
  Power is reported by true effect size.

What "no real improvement" means needs care: two seeds of one recipe do differ, and sometimes the
candidate's seed is genuinely better. So every candidate's **true** gain is also measured on a
large fresh sample of the task's population (20,000 new rows from the task's own generator; the
digits have none, so there the sealed test split stands in), and false promotions are reported
two ways: over all null candidates (the literal count), and over those whose true gain is ≤ 0
(the candidate is not better at all: the error the paired test controls at α).

Both gates judge exactly the same pairs on exactly the same gate rows:

* **new** — ``improvement.runs.promotion.decide``: gain ≥ ``performance_threshold`` (10 %) and a
  paired test (McNemar for accuracy, a paired bootstrap for the other metrics) at α = 0.05;
* **old** — gain ≥ 10 % on the point estimates, no test (the rule before the gate existed).

Models train with fixed epochs (not seconds), so results do not depend on machine load. Two
processes, one torch thread each.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import torch

from bench.common import target

NAME = "gate"
DESCRIPTION = "promotion gate: false promotions on null candidates and power on real ones, new gate vs old"

N_NULL = int(os.environ.get("BENCH_GATE_NULL", "40"))  # per task: 5 tasks → 200 null candidates
N_REAL = int(os.environ.get("BENCH_GATE_REAL", "20"))  # per task
POPULATION = 20_000
WEAK_FRACTIONS = (0.05, 0.15, 0.3, 0.5)  # the active version's share of the candidate's epochs
#: True error reductions (on the sealed test split) by which power is reported.
EFFECT_BINS = ((0.1, 0.25), (0.25, 0.5), (0.5, 1.01))
ALPHA = 0.05
THRESHOLD = 0.10
PROCESSES = 2


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # output kind
    metric: str
    null_epochs: int
    strong_epochs: int
    source: str  # "built-in" or "upload"

    def weak_epochs(self, i: int) -> int:
        return max(1, round(self.strong_epochs * WEAK_FRACTIONS[i % len(WEAK_FRACTIONS)]))


TASKS = (
    TaskSpec("pattern-recognition", "classes", "accuracy", 15, 25, "built-in"),
    TaskSpec("hormone-response", "values", "r2", 40, 60, "built-in"),
    TaskSpec("memory-consolidation", "reconstruction", "reconstruction_r2", 30, 40, "built-in"),
    TaskSpec("rare-events", "classes", "balanced_accuracy", 20, 30, "upload"),
    TaskSpec("housing-like", "values", "mae_skill", 30, 50, "upload"),
)


def _upload_rare_events(rng: np.random.Generator, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """An imbalanced binary table: 12 % positives behind a curved boundary, 10 features."""
    X = rng.normal(size=(n, 10)).astype(np.float32)
    logit = 1.5 * X[:, 0] * X[:, 1] + X[:, 2] ** 2 - 0.8 * X[:, 3] - 2.6
    y = (rng.random(n) < 1 / (1 + np.exp(-3 * logit))).astype(np.int64)
    return X, y


def _upload_housing_like(rng: np.random.Generator, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """A regression table: a smooth nonlinear target of 8 features plus noise."""
    X = rng.normal(size=(n, 8)).astype(np.float32)
    y = np.sin(X[:, 0]) * 2 + X[:, 1] * X[:, 2] + 0.5 * np.abs(X[:, 3]) + 0.3 * rng.normal(size=n)
    return X, y.astype(np.float32).reshape(-1, 1)


def _data(spec: TaskSpec) -> tuple[np.ndarray, np.ndarray]:
    from models_registry.data.builtin import BUILTIN_DATASETS

    rng = np.random.default_rng(7)
    if spec.name == "rare-events":
        return _upload_rare_events(rng)
    if spec.name == "housing-like":
        return _upload_housing_like(rng)
    X, y = BUILTIN_DATASETS[spec.name].load(0)
    return np.asarray(X, dtype=np.float32), np.asarray(y)


@functools.lru_cache(maxsize=8)
def _population(name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """A large fresh sample of the task's population (inputs, targets), or None (the digits)."""
    from models_registry.data.builtin import memory_vectors, sample_hormone_inputs
    from models_registry.data.hormone_model import simulate_hormone_response

    rng = np.random.default_rng(424242)
    if name == "rare-events":
        return _upload_rare_events(rng, POPULATION)
    if name == "housing-like":
        return _upload_housing_like(rng, POPULATION)
    if name == "hormone-response":
        X = sample_hormone_inputs(POPULATION, rng)
        return X, simulate_hormone_response(X)
    if name == "memory-consolidation":
        X = memory_vectors(POPULATION, rng)
        return X, X
    return None


def _genome(spec: TaskSpec, X: np.ndarray, y: np.ndarray) -> dict:
    common = {"activation": "relu", "dropout": 0.0, "norm": "none"}
    shape = list(X.shape[1:])
    if spec.kind == "reconstruction":
        return {"kind": "autoencoder", "input_shape": shape, "code_dim": 8, "encoder": [32], **common}
    out = int(y.max()) + 1 if spec.kind == "classes" else int(np.asarray(y).reshape(len(y), -1).shape[1])
    return {"kind": "mlp", "input_shape": shape, "output_dim": out, "hidden": [32], **common}


def _train(job: tuple[TaskSpec, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Train one model (spec, seed, epochs); its raw outputs on the gate rows, the test rows, the population."""
    from models_registry.data.splits import make_splits
    from models_registry.nn.evaluation import torch_predict_fn
    from models_registry.nn.genome import build_module, set_normalisation
    from models_registry.nn.training import TrainConfig, TrainData, train_module

    spec, seed, epochs = job
    torch.set_num_threads(1)
    X, y = _data(spec)
    splits = make_splits(len(X), y=y if spec.kind == "classes" else None, stratify=spec.kind == "classes", seed=0)
    target_of = (lambda idx: X[idx]) if spec.kind == "reconstruction" else (lambda idx: y[idx])
    data = TrainData(X_train=X[splits["train"]], y_train=target_of(splits["train"]),
                     X_val=X[splits["val"]], y_val=target_of(splits["val"]))
    torch.manual_seed(seed)
    module = build_module(_genome(spec, X, y))
    set_normalisation(module, data.X_train, data.y_train, spec.kind)
    train_module(module, data, output_kind=spec.kind,
                 config=TrainConfig(epochs=epochs, patience=epochs, seed=seed, metric=spec.metric, batch_size=64))
    predict = torch_predict_fn(module)
    population = _population(spec.name)
    return (predict(X[splits["gate"]]), predict(X[splits["test"]]),
            predict(np.asarray(population[0], dtype=np.float32)) if population is not None else None)


def _evaluation(spec: TaskSpec, raw: np.ndarray, y: np.ndarray):
    from models_registry.nn.evaluation import EvaluationResult
    from models_registry.nn.metrics import metric_score, predictions_from_raw

    predictions = predictions_from_raw(spec.kind, raw)
    return EvaluationResult(score=metric_score(spec.metric, y, predictions), metric=spec.metric, latency={},
                            n_parameters=None, size_bytes=None, n_rows=len(y), predictions=predictions)


def _judge(spec: TaskSpec, base: tuple, cand: tuple, y_gate: np.ndarray, y_test: np.ndarray) -> dict:
    from improvement.runs.promotion import decide, score_gain

    b_gate, c_gate = _evaluation(spec, base[0], y_gate), _evaluation(spec, cand[0], y_gate)
    b_test, c_test = _evaluation(spec, base[1], y_test), _evaluation(spec, cand[1], y_test)
    population = _population(spec.name)
    if population is not None:
        true_gain = score_gain(_evaluation(spec, base[2], population[1]).score,
                               _evaluation(spec, cand[2], population[1]).score)
    else:
        true_gain = score_gain(b_test.score, c_test.score)
    new = decide(objective="score", baseline=b_gate, candidate=c_gate, y_gate=y_gate, threshold=THRESHOLD,
                 alpha=ALPHA, score_tolerance=0.005, latency_budget_ms=1e9)
    old_gain = score_gain(b_gate.score, c_gate.score)
    return {"new": new.promote, "old": old_gain >= THRESHOLD, "gate_gain": old_gain,
            "p": new.evidence["paired"]["p_better"], "test_gain": score_gain(b_test.score, c_test.score),
            "true_gain": true_gain}


def _targets(spec: TaskSpec) -> tuple[np.ndarray, np.ndarray]:
    from models_registry.data.splits import make_splits

    X, y = _data(spec)
    splits = make_splits(len(X), y=y if spec.kind == "classes" else None, stratify=spec.kind == "classes", seed=0)
    source = X if spec.kind == "reconstruction" else y
    return source[splits["gate"]], source[splits["test"]]


def _rate(hits: list[bool]) -> dict:
    from models_registry.nn.significance import wilson_interval

    k, n = int(sum(hits)), len(hits)
    lo, hi = wilson_interval(k, n)
    return {"rate": k / n if n else None, "k": k, "n": n, "ci95": [round(lo, 4), round(hi, 4)]}


def run() -> dict[str, Any]:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    django.setup()
    start, cpu_start = time.perf_counter(), time.process_time()
    jobs: list[tuple[TaskSpec, int, int]] = []
    for spec in TASKS:
        jobs += [(spec, 1000 + 2 * i + k, spec.null_epochs) for i in range(N_NULL) for k in (0, 1)]
        jobs += [(spec, 5000 + i, epochs) for i in range(N_REAL) for epochs in (spec.weak_epochs(i), spec.strong_epochs)]
    jobs = list(dict.fromkeys(jobs))
    with ProcessPoolExecutor(max_workers=PROCESSES) as pool:
        outputs = dict(zip(jobs, pool.map(_train, jobs, chunksize=4), strict=True))

    null, real, per_task = [], [], []
    for spec in TASKS:
        y_gate, y_test = _targets(spec)
        nulls = [_judge(spec, outputs[(spec, 1000 + 2 * i, spec.null_epochs)],
                        outputs[(spec, 1001 + 2 * i, spec.null_epochs)], y_gate, y_test) for i in range(N_NULL)]
        reals = [_judge(spec, outputs[(spec, 5000 + i, spec.weak_epochs(i))],
                        outputs[(spec, 5000 + i, spec.strong_epochs)], y_gate, y_test) for i in range(N_REAL)]
        null += nulls
        real += reals
        per_task.append({
            "task": spec.name, "source": spec.source, "metric": spec.metric, "gate_rows": len(y_gate),
            "null": len(nulls), "truly not better": sum(r["true_gain"] <= 0 for r in nulls),
            "promoted new": sum(r["new"] for r in nulls), "promoted old": sum(r["old"] for r in nulls),
            "not better, promoted new": sum(r["new"] for r in nulls if r["true_gain"] <= 0),
            "not better, promoted old": sum(r["old"] for r in nulls if r["true_gain"] <= 0),
            "real": len(reals), "power new": sum(r["new"] for r in reals) / len(reals),
            "power old": sum(r["old"] for r in reals) / len(reals),
            "median true gain": round(statistics.median(r["true_gain"] for r in reals), 4),
        })

    false_new, false_old = _rate([r["new"] for r in null]), _rate([r["old"] for r in null])
    power_new, power_old = _rate([r["new"] for r in real]), _rate([r["old"] for r in real])
    effect = statistics.median(r["true_gain"] for r in real)
    not_better = [r for r in null if r["true_gain"] <= 0]
    small = [r for r in null if 0 < r["true_gain"] < THRESHOLD]
    false_true_null = _rate([r["new"] for r in not_better])
    false_true_null_old = _rate([r["old"] for r in not_better])
    by_effect = []
    for lo, hi in EFFECT_BINS:
        group = [r for r in real if lo <= r["true_gain"] < hi]
        if group:
            by_effect.append({"true error reduction": f"{lo:.0%}–{min(hi, 1.0):.0%}", "candidates": len(group),
                              "power new": round(sum(r["new"] for r in group) / len(group), 3),
                              "power old": round(sum(r["old"] for r in group) / len(group), 3)})
    null_by_truth = []
    for label, group in (("truly not better (true gain ≤ 0)", [r for r in null if r["true_gain"] <= 0]),
                         ("better by less than the threshold", [r for r in null if 0 < r["true_gain"] < THRESHOLD]),
                         ("better by the threshold or more (a lucky seed)",
                          [r for r in null if r["true_gain"] >= THRESHOLD])):
        null_by_truth.append({"null candidates": label, "n": len(group),
                              "promoted new": sum(r["new"] for r in group), "promoted old": sum(r["old"] for r in group)})
    strong_effect = [r for r in real if r["true_gain"] >= 0.5]
    power_strong = _rate([r["new"] for r in strong_effect]) if strong_effect else {"rate": None, "ci95": [0, 1]}
    return {
        "false_promotion_rate": false_new["rate"], "false_promotion_ci95": false_new["ci95"], "n_null": len(null),
        "power": power_new["rate"], "power_ci95": power_new["ci95"], "n_real": len(real), "alpha": ALPHA,
        "threshold": THRESHOLD, "effect_size_median_true_gain": round(effect, 4),
        "false_promotion_rate_not_better": false_true_null["rate"], "false_promotion_not_better_ci95":
            false_true_null["ci95"], "n_null_not_better": len(not_better),
        "promotion_rate_small_true_gain": _rate([r["new"] for r in small])["rate"] if small else None,
        "n_null_small_true_gain": len(small),
        "old_gate": {"false_promotion_rate": false_old["rate"], "false_promotion_ci95": false_old["ci95"],
                     "false_promotion_rate_not_better": false_true_null_old["rate"],
                     "power": power_old["rate"], "power_ci95": power_old["ci95"]},
        "cpu_seconds": round(time.process_time() - cpu_start, 1), "wall_seconds": round(time.perf_counter() - start, 1),
        "power_by_effect": by_effect, "null_by_true_gain": null_by_truth,
        "tables": {"per task": per_task, "null candidates by true gain": null_by_truth,
                   "power by true effect size": by_effect, "overall": [
            {"gate": "new (gain ≥ 10 % and paired test at α 0.05)", "false promotions": false_new["rate"],
             "95% CI": false_new["ci95"], "power": power_new["rate"], "power 95% CI": power_new["ci95"]},
            {"gate": "old (gain ≥ 10 %, no test)", "false promotions": false_old["rate"], "95% CI": false_old["ci95"],
             "power": power_old["rate"], "power 95% CI": power_old["ci95"]},
        ]},
        "targets": [
            target("false promotions on null candidates", "≤ 5 %", false_new["rate"],
                   false_new["rate"] is not None and false_new["rate"] <= 0.05),
            target("false promotions of null candidates that are truly not better", "≤ 5 %",
                   false_true_null["rate"], false_true_null["rate"] is not None and false_true_null["rate"] <= 0.05),
            target("power on real improvements of ≥ 50 % less error (true gain)", "≥ 80 %",
                   power_strong["rate"], power_strong["rate"] is not None and power_strong["rate"] >= 0.8),
        ],
        "notes": [f"{len(null)} null and {len(real)} real candidates over {len(TASKS)} tasks; both gates judged the "
                  f"same pairs on the same gate rows; true gains on {POPULATION:,} fresh rows per task (the digits: "
                  f"the sealed test split)",
                  f"{len(not_better)} null candidates are truly not better, {len(small)} truly better by less than "
                  f"the threshold, {len(null) - len(not_better) - len(small)} truly better by at least the threshold "
                  f"(a lucky seed)"],
    }
