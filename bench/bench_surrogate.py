"""The hormone-response algorithm (HPA simulator) vs a neural surrogate trained on its labels.

The simulator (``simulate_hormone_response``: 24 h of RK4 over 1,500 steps, twice per
input) labels uniformly sampled stimulus parameters; an MLP built from a genome
(``models_registry.nn``: pure torch) is trained on them until its held-out R² (mean over the
five outputs, as the task scores it) reaches 0.99, labelling more data if the first round
falls short; training stops as soon as every output's validation R² clears the target (plus
a small margin), so the cost counted is what the target needs.

The fair baseline is not the 1,500-step simulator that made the labels: that one is far more
accurate than the surrogate. It is the cheapest RK4 that is as accurate as the surrogate: the
smallest step count whose outputs reach at least the surrogate's own held-out R² against the
1,500-step reference on the same held-out inputs (every step count from 10 up to the first
point of a coarse grid that reaches it; bisection between grid points above 200). Then, with one
thread as a serving worker has, that RK4, the surrogate (torch and ONNX Runtime) and, for
reference, the 1,500-step simulator answer batches of 1,000 (and single queries) from the same
held-out inputs, timed round-robin (wall clock and the calling thread's CPU time).

Reported: time per batch of 1,000, speed-ups against the cheapest sufficient RK4 (the target)
and the 1,500-step simulator (labelled, not the target), and the break-even number of queries
— how many must be answered before the surrogate's whole cost (labelling every sample it was
trained, validated and tested on, plus training) is paid back by its per-query saving over the
cheapest sufficient RK4.
Target (issue 6, restated so it can fail): at least 10× faster per batch of 1,000 than the
cheapest RK4 that matches the surrogate's R², at R² ≥ 0.99.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

from bench.common import target
from models_registry.data.hormone_model import (
    HORMONE_OUTPUT_NAMES,
    N_STEPS,
    sample_hormone_inputs,
    simulate_hormone_response,
)
from models_registry.nn.evaluation import score_predictions, torch_predict_fn
from models_registry.nn.genome import build_module, count_parameters, set_normalisation
from models_registry.nn.runtimes import make_predict_fn
from models_registry.nn.training import TrainConfig, TrainData, train_module

NAME = "surrogate"
DESCRIPTION = ("hormone-response: neural surrogate vs the cheapest RK4 as accurate as it (and the 1,500-step "
               "simulator): time per 1,000, speed-up, break-even")

SEED = 0
N_TRAIN, N_VAL, N_TEST = 16_000, 2_000, 2_000
N_MORE = 16_000  # labelled and added when the first round stays below the R² target
R2_TARGET = 0.99
SPEEDUP_TARGET = 10.0
BATCH = 1_000
GENOME = {"kind": "mlp", "input_shape": [8], "output_dim": 5, "hidden": [256, 256, 256], "activation": "silu",
          "dropout": 0.0, "norm": "none"}
ROUND_SECONDS = (150.0, 150.0)  # training wall budget per round
STOP_MARGIN = 0.002  # training stops once every output's validation R² reaches the target plus this margin
#: Coarse grid of RK4 step counts for the baseline search (the reference is N_STEPS).
STEP_GRID = (10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, N_STEPS)
EXHAUSTIVE_UP_TO = 200  # below this every step count is tried; above it, bisection between grid points
TIMING = {"rounds": 300, "max_s": 20.0}  # round-robin timing of the batch-of-1,000 contenders

PredictFn = Callable[[np.ndarray], np.ndarray]


class _TargetReached(Exception):
    """Raised from the progress callback once the validation R² clears the target."""


def _stop_at(module: torch.nn.Module, X_val: np.ndarray, y_val: np.ndarray, r2_target: float):
    """A progress callback ending training once every output's validation R² clears ``r2_target``.

    The cost counted is then what the target needs, not what a long schedule would spend.
    ``train_module`` puts the module back in training mode at each epoch's start.
    """
    last: dict = {}

    def progress(event) -> None:
        last.update(event)
        worst = min(_test_r2(module, X_val, y_val)[1])
        last["val_worst_r2"] = worst
        if event["val_score"] >= r2_target and worst >= r2_target:
            raise _TargetReached

    return progress, last


def _label(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    t0 = time.perf_counter()
    X = sample_hormone_inputs(n, rng)
    y = simulate_hormone_response(X)
    return X, y, time.perf_counter() - t0


def _median_ms(fn: PredictFn, X: np.ndarray, *, repeats: int, warmup: int = 2, max_s: float = 20.0) -> float:
    for _ in range(warmup):
        fn(X)
    times = []
    deadline = time.perf_counter() + max_s
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(X)
        times.append((time.perf_counter() - t0) * 1000.0)
        if time.perf_counter() > deadline:
            break
    return float(np.median(times))


def _round_robin_ms(fns: dict[str, PredictFn], X: np.ndarray, *, rounds: int, max_s: float,
                    warmup: int = 2) -> dict[str, dict[str, float]]:
    """Median wall and thread-CPU milliseconds per call, one call of each contender per round.

    Interleaving spreads a burst of load from other processes over every contender, so the
    ratios stay meaningful on a shared machine; with one thread each call computes on the
    calling thread, so its thread CPU time is its cost without the time the core spent elsewhere.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn(X)
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    deadline = time.perf_counter() + max_s
    for _ in range(rounds):
        for name, fn in fns.items():
            c0, t0 = time.thread_time(), time.perf_counter()
            fn(X)
            t1, c1 = time.perf_counter(), time.thread_time()
            wall[name].append((t1 - t0) * 1000.0)
            cpu[name].append((c1 - c0) * 1000.0)
        if time.perf_counter() > deadline:
            break
    return {name: {"wall_ms": float(np.median(wall[name])), "cpu_ms": float(np.median(cpu[name])),
                   "rounds": len(wall[name])} for name in fns}


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(1.0 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


def _test_r2(module: torch.nn.Module, X: np.ndarray, y: np.ndarray) -> tuple[float, list[float]]:
    pred = torch_predict_fn(module)(X)
    return score_predictions("values", y, pred), [_r2(y[:, j], pred[:, j]) for j in range(y.shape[1])]


def _rk4_accuracy(X: np.ndarray, y_ref: np.ndarray, steps: int) -> dict[str, Any]:
    """R² (the task's score, and each output's) of an RK4 with ``steps`` steps against the reference labels."""
    with np.errstate(all="ignore"):  # too few steps: fixed-step RK4 goes unstable and overflows
        pred = simulate_hormone_response(X, n_steps=steps).astype(np.float64)
        finite = bool(np.all(np.isfinite(pred)))
        per_column = [_r2(y_ref[:, j].astype(np.float64), pred[:, j]) if finite else float("-inf")
                      for j in range(y_ref.shape[1])]
    return {"steps": steps, "r2": score_predictions("values", y_ref, pred), "worst_output_r2": min(per_column),
            "finite": finite}


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "worst_output_r2": _finite_or_none(row["worst_output_r2"])}


def _shown_r2(value: float) -> float | str:
    """An R² for the table: a diverged simulation's is astronomically negative (or -inf)."""
    return round(value, 6) if value > -1.0 else "< -1"


def _count(value: float | None) -> str:
    return "never (no saving)" if value is None else f"{value:,.0f}"


def _finite_or_none(value: float) -> float | None:
    return value if np.isfinite(value) else None


def _cheapest_rk4(X: np.ndarray, y_ref: np.ndarray, r2_needed: float,
                  worst_needed: float) -> tuple[int, int | None, list[dict[str, Any]]]:
    """The smallest step count whose R² reaches ``r2_needed`` (and the smallest also reaching ``worst_needed``
    on its worst output), with every evaluation made.

    The coarse grid is walked upwards to the first point that reaches ``r2_needed``. Below
    ``EXHAUSTIVE_UP_TO`` every step count up to it is then tried (R² is not monotone where RK4 is
    unstable); above, the bracket from the previous grid point is bisected.
    """
    seen: dict[int, dict[str, Any]] = {}

    def accuracy(steps: int) -> dict[str, Any]:
        if steps not in seen:
            seen[steps] = _rk4_accuracy(X, y_ref, steps)
        return seen[steps]

    hi_index = next((i for i, steps in enumerate(STEP_GRID) if accuracy(steps)["r2"] >= r2_needed), len(STEP_GRID) - 1)
    hi = STEP_GRID[hi_index]
    lo = STEP_GRID[hi_index - 1] if hi_index else STEP_GRID[0] - 1
    if hi <= EXHAUSTIVE_UP_TO:
        for steps in range(STEP_GRID[0], hi + 1):
            accuracy(steps)
    else:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if accuracy(mid)["r2"] >= r2_needed:
                hi = mid
            else:
                lo = mid
    rows = [seen[k] for k in sorted(seen)]
    cheapest = next((r["steps"] for r in rows if r["r2"] >= r2_needed), N_STEPS)
    both = next((r["steps"] for r in rows if r["r2"] >= r2_needed and r["worst_output_r2"] >= worst_needed), None)
    return cheapest, both, rows


def run() -> dict[str, Any]:
    rng = np.random.default_rng(SEED)
    train_threads = torch.get_num_threads()
    X_tr, y_tr, label_s = _label(N_TRAIN, rng)
    X_va, y_va, s = _label(N_VAL, rng)
    label_s += s
    X_te, y_te, s = _label(N_TEST, rng)
    label_s += s

    torch.manual_seed(SEED)
    module = build_module(GENOME)
    set_normalisation(module, X_tr, y_tr, "values")
    train_s, rounds = 0.0, []
    for i, budget in enumerate(ROUND_SECONDS):
        if i > 0:
            X_more, y_more, s = _label(N_MORE, rng)
            label_s += s
            X_tr, y_tr = np.concatenate([X_tr, X_more]), np.concatenate([y_tr, y_more])
        config = TrainConfig(epochs=400, batch_size=256, lr=2e-3 if i == 0 else 5e-4, weight_decay=0.0,
                             patience=40, lr_schedule="cosine", max_seconds=budget, seed=SEED + i)
        progress, last = _stop_at(module, X_va, y_va, R2_TARGET + STOP_MARGIN)
        t0 = time.perf_counter()
        try:
            result = train_module(module, TrainData(X_tr, y_tr, X_va, y_va), output_kind="values", config=config,
                                  progress=progress)
            epochs, val_r2, stop = result.epochs_run, result.best_val_score, result.stop_reason
        except _TargetReached:
            epochs, val_r2, stop = last["epoch"], last["val_score"], "target"
        seconds = time.perf_counter() - t0
        train_s += seconds
        r2, per_column = _test_r2(module, X_te, y_te)
        rounds.append({"round": i + 1, "train_samples": len(X_tr), "epochs": epochs, "train_s": round(seconds, 1),
                       "val_r2": round(val_r2, 5), "test_r2": round(r2, 5), "stop": stop})
        if r2 >= R2_TARGET and min(per_column) >= R2_TARGET:
            break

    # The surrogate's own accuracy against the fine (N_STEPS) reference, and the cheapest RK4 that matches it.
    r2, per_column = _test_r2(module, X_te, y_te)
    module.eval()
    search_t0 = time.perf_counter()
    cheapest, cheapest_both, search = _cheapest_rk4(X_te, y_te, r2, min(per_column))
    search_s = time.perf_counter() - search_t0
    cheapest_acc = next(r for r in search if r["steps"] == cheapest)

    # Serving conditions: one thread, the same 1,000 held-out inputs for everyone.
    torch.set_num_threads(1)
    try:
        X_batch, X_one = np.ascontiguousarray(X_te[:BATCH]), np.ascontiguousarray(X_te[:1])
        rk4: PredictFn = partial(simulate_hormone_response, n_steps=cheapest)
        runtimes = {"torch_fp32": torch_predict_fn(module), "onnx_fp32": make_predict_fn("onnx_fp32", module=module)}
        contenders: dict[str, PredictFn] = {"rk4_cheapest": rk4, **runtimes}
        b1000 = _round_robin_ms(contenders, X_batch, **TIMING)
        b1 = _round_robin_ms(contenders, X_one, rounds=500, max_s=10.0)
        fine_b1000 = _median_ms(simulate_hormone_response, X_batch, repeats=7, warmup=1)
        fine_b1 = _median_ms(simulate_hormone_response, X_one, repeats=15, warmup=1)
    finally:
        torch.set_num_threads(train_threads)

    base = b1000["rk4_cheapest"]
    table = [
        {"implementation": f"RK4, {cheapest} steps: cheapest as accurate as the surrogate (baseline)",
         "ms_per_1000": round(base["wall_ms"], 3), "cpu_ms_per_1000": round(base["cpu_ms"], 3),
         "ms_per_query_b1": round(b1["rk4_cheapest"]["wall_ms"], 4), "speedup_b1000": 1.0, "cpu_speedup_b1000": 1.0,
         "test_r2": round(cheapest_acc["r2"], 5)},
        {"implementation": f"RK4, {N_STEPS} steps: the reference that made the labels (not the baseline)",
         "ms_per_1000": round(fine_b1000, 3), "cpu_ms_per_1000": None, "ms_per_query_b1": round(fine_b1, 4),
         "speedup_b1000": round(base["wall_ms"] / fine_b1000, 3), "cpu_speedup_b1000": None, "test_r2": 1.0},
    ]
    for name in runtimes:
        table.append({"implementation": f"surrogate MLP, {name}", "ms_per_1000": round(b1000[name]["wall_ms"], 3),
                      "cpu_ms_per_1000": round(b1000[name]["cpu_ms"], 3),
                      "ms_per_query_b1": round(b1[name]["wall_ms"], 4),
                      "speedup_b1000": round(base["wall_ms"] / b1000[name]["wall_ms"], 2),
                      "cpu_speedup_b1000": round(base["cpu_ms"] / b1000[name]["cpu_ms"], 2),
                      "test_r2": round(r2, 5)})
    best_name = min(runtimes, key=lambda k: b1000[k]["wall_ms"])
    best_cpu_name = min(runtimes, key=lambda k: b1000[k]["cpu_ms"])
    speedup = base["wall_ms"] / b1000[best_name]["wall_ms"]
    speedup_cpu = base["cpu_ms"] / b1000[best_cpu_name]["cpu_ms"]
    speedup_vs_fine = fine_b1000 / b1000[best_name]["wall_ms"]
    cost_s = label_s + train_s
    saving_b1000_s = (base["wall_ms"] - b1000[best_name]["wall_ms"]) / 1000.0 / BATCH  # per query, batches of 1,000
    saving_b1_s = (b1["rk4_cheapest"]["wall_ms"] - b1[best_name]["wall_ms"]) / 1000.0  # per single query
    # None: the surrogate saves nothing per query, so it never pays back (JSON has no infinity).
    break_even_b1000 = cost_s / saving_b1000_s if saving_b1000_s > 0 else None
    break_even_b1 = cost_s / saving_b1_s if saving_b1_s > 0 else None
    per_output = {name: round(v, 5) for name, v in zip(HORMONE_OUTPUT_NAMES, per_column, strict=True)}
    accurate = r2 >= R2_TARGET
    return {
        "table": table,
        "tables": {
            "training rounds": rounds,
            "RK4 step counts tried (R² against the 1,500-step labels, held-out inputs)": [
                {"steps": r["steps"], "r2": round(r["r2"], 6), "worst_output_r2": _shown_r2(r["worst_output_r2"]),
                 "finite": r["finite"], "reaches_surrogate_r2": r["r2"] >= r2}
                for r in search if r["steps"] in STEP_GRID or abs(r["steps"] - cheapest) <= 3
            ],
        },
        "targets": [
            target("surrogate held-out R² (mean over outputs: the task's score)", f">= {R2_TARGET}", round(r2, 5),
                   accurate),
            target("surrogate held-out R² of its worst output", f">= {R2_TARGET}", round(min(per_column), 5),
                   min(per_column) >= R2_TARGET),
            target(f"speed-up per batch of 1,000 ({best_name}, 1 thread, wall clock) vs the cheapest RK4 as accurate "
                   f"as the surrogate ({cheapest} steps)", f">= {SPEEDUP_TARGET:g}x at R² >= {R2_TARGET}",
                   round(speedup, 2), speedup >= SPEEDUP_TARGET and accurate),
            target(f"speed-up per batch of 1,000 ({best_cpu_name}, 1 thread, thread CPU time) vs the cheapest RK4 "
                   f"as accurate as the surrogate ({cheapest} steps)", f">= {SPEEDUP_TARGET:g}x at R² >= {R2_TARGET}",
                   round(speedup_cpu, 2), speedup_cpu >= SPEEDUP_TARGET and accurate),
        ],
        "notes": [
            f"the surrogate's held-out R² against the {N_STEPS}-step labels is {r2:.5f}; the cheapest RK4 reaching "
            f"it has {cheapest} steps (R² {cheapest_acc['r2']:.5f}); "
            + (f"{cheapest_both} steps also match its worst output ({min(per_column):.5f})"
               if cheapest_both is not None else "no step count tried also matches its worst output")
            + f"; {len(search)} step counts tried in {search_s:.1f} s",
            f"against the {N_STEPS}-step simulator (the labels, far more accurate than the surrogate) the speed-up "
            f"would be {speedup_vs_fine:.1f}x: that comparison is reported, not the target",
            f"cost of the surrogate: labelling {label_s:.1f} s ({len(X_tr) + N_VAL + N_TEST} simulations) + "
            f"training {train_s:.1f} s ({train_threads} threads) = {cost_s:.1f} s",
            f"break-even against the {cheapest}-step RK4: {_count(break_even_b1000)} queries answered in batches of "
            f"1,000, or {_count(break_even_b1)} single queries",
            f"{cheapest} steps is just above where fixed-step RK4 loses accuracy sharply and then diverges on some of "
            "these inputs: a careful operator would keep a margin, so a safe RK4 costs a little more than this one",
            f"per-output test R²: {per_output}",
            f"MLP {GENOME['hidden']} {GENOME['activation']}: {count_parameters(module):,} parameters",
            f"batch-of-1,000 timings round-robin over {base['rounds']} rounds (RK4 {cheapest} steps, torch, ONNX); "
            f"the {N_STEPS}-step row is a median of 7 calls taken afterwards",
        ],
        "details": {"label_s": label_s, "train_s": train_s, "cost_s": cost_s, "test_r2": r2,
                    "per_output_r2": per_output, "rk4_cheapest_steps": cheapest,
                    "rk4_cheapest_steps_matching_worst_output": cheapest_both, "rk4_cheapest_r2": cheapest_acc["r2"],
                    "rk4_search": [_json_row(r) for r in search], "timings_b1000_ms": b1000, "timings_b1_ms": b1,
                    "rk4_fine_ms_b1000": fine_b1000, "rk4_fine_ms_b1": fine_b1, "best_runtime": best_name,
                    "speedup_b1000": speedup, "cpu_speedup_b1000": speedup_cpu,
                    "speedup_b1000_vs_fine": speedup_vs_fine, "break_even_queries_b1000": break_even_b1000,
                    "break_even_queries_b1": break_even_b1},
    }
