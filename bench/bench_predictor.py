"""Architecture search on the digits with and without the predictor's pre-screening.

Both arms run the same genetic search (``improvement.nn.evolution.evolve``) from the demo's
seeded weak pattern-recognition model (an MLP with 2 hidden units, briefly trained; children
inherit its weights) and train exactly the same number of candidates: ``KEEP`` per generation
for ``GENERATIONS`` generations, each with the same budget (``train_genome_candidate``,
``CANDIDATE_TRAIN`` epochs, validation accuracy).

* **plain**: ``population_size = KEEP`` — every bred genome is trained.
* **pre-screened**: ``population_size = 2 × KEEP`` bred; ``improvement.nn.gain_model.Prescreen``
  trains only the ``KEEP`` with the best predicted score. Its genome scorer learns from an
  earlier search's candidates (what ``SearchCandidate`` history gives the loop) and from this
  search's own as they finish, and screens only while its cross-validated ranking beats
  chance; otherwise it trains the first ``KEEP`` in bred order, as the plain arm does.

The earlier search that provides the history (plain, another seed) runs once and counts in
neither arm: in the running system it is a by-product of earlier runs.

Selection uses (score ↑, parameters ↓) instead of the loop's (score, latency, parameters):
latency measured on a shared machine is noise that would make two runs of the same seed
breed different genomes; with it out, every search is deterministic given its seed.

Reported per arm and seed: the best validation accuracy after 4, 8, 12 and 16 candidates
trained, the test accuracy of the final best, and how many candidates were trained before one
reached ``TARGET_VAL``. Pure torch/numpy, no Django. Searches run in two processes (one torch
thread each): about 3 minutes on 2 free cores, ~6 minutes of CPU in all.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

from bench.common import digits_splits, target
from improvement.nn.evolution import Individual, SearchConfig, evolve, train_genome_candidate
from improvement.nn.gain_model import GenomeObservation, Prescreen
from models_registry.data.builtin import BUILTIN_DATASETS
from models_registry.nn.evaluation import score_predictions, to_predictions, torch_predict_fn
from models_registry.nn.genome import build_module, genome_summary, set_normalisation
from models_registry.nn.training import TrainConfig, TrainData, train_module

NAME = "predictor"
DESCRIPTION = "architecture search on digits with vs without the predictor's pre-screening (equal candidates trained)"

KEEP = 4  # candidates trained per generation, in both arms
GENERATIONS = 4
# Five searches per arm; BENCH_PREDICTOR_SEEDS=0,1,2 for a quicker look.
SEEDS = tuple(int(v) for v in os.environ.get("BENCH_PREDICTOR_SEEDS", "0,1,2,3,4").split(","))
HISTORY_SEED = 100  # the earlier search the genome scorer learns from
TARGET_VAL = 0.90
CHECKPOINTS = (4, 8, 12, 16)
OBJECTIVES = ("score", "n_parameters")
# Epochs, not seconds, bound each candidate, so results do not depend on how busy the machine is.
CANDIDATE_TRAIN = TrainConfig(epochs=12, batch_size=128, lr=3e-3, patience=6, lr_schedule="cosine")
PARENT_TRAIN = TrainConfig(epochs=3, batch_size=64, lr=3e-3, patience=3, seed=0)  # the demo's seeded weak model
MUTATION_RATE = 0.3
FAMILY_JUMP = 0.5  # what the architecture strategy uses for an MLP on image inputs
PROCESSES = 2


@dataclasses.dataclass
class Search:
    """One search's outcome, without modules (it crosses a process boundary)."""

    arm: str
    seed: int
    trained: list[tuple[dict, float | None]]  # (genome, validation accuracy) in training order
    best_genome: dict
    best_val: float
    test_accuracy: float
    seconds: float
    cpu_seconds: float
    notes: list[str]

    def best_after(self, k: int) -> float:
        return max(score for _, score in self.trained[:k] if score is not None)

    def needed(self) -> int | None:
        return next((n for n, (_, score) in enumerate(self.trained, start=1)
                     if score is not None and score >= TARGET_VAL), None)


def _data() -> tuple[TrainData, Any, Any]:
    splits = digits_splits()
    return TrainData(splits.X_train, splits.y_train, splits.X_val, splits.y_val), splits.X_test, splits.y_test


def _parent(data: TrainData) -> tuple[dict, dict]:
    genome = BUILTIN_DATASETS["pattern-recognition"].genome()
    torch.manual_seed(0)
    module = build_module(genome)
    set_normalisation(module, data.X_train, data.y_train, "classes")
    train_module(module, data, output_kind="classes", config=PARENT_TRAIN)
    return genome, {k: v.detach().clone() for k, v in module.state_dict().items()}


def search(arm: str, seed: int, parent: dict, parent_state: dict, history: list[GenomeObservation]) -> Search:
    """One search of ``KEEP × GENERATIONS`` trained candidates (a process-pool job)."""
    torch.set_num_threads(1)
    data, X_test, y_test = _data()
    start, cpu_start = time.perf_counter(), time.process_time()
    trained: list[Individual] = []

    def evaluate(genomes: list[dict]) -> list[Individual]:
        out = []
        for genome in genomes:
            config = dataclasses.replace(CANDIDATE_TRAIN, seed=seed * 1000 + len(trained))
            result = train_genome_candidate(genome, parent_state=parent_state, data=data, output_kind="classes",
                                            config=config)
            ind = Individual(genome=genome, score=result.val_score, latency_ms=result.latency_ms,
                             n_parameters=result.n_parameters, extra={"module": result.module})
            trained.append(ind)
            out.append(ind)
        return out

    config = SearchConfig(population_size=KEEP, generations=GENERATIONS, mutation_rate=MUTATION_RATE, seed=seed,
                          family_jump=FAMILY_JUMP, objectives=OBJECTIVES)
    notes: list[str] = []
    if arm == "pre-screened":
        screen = Prescreen(evaluate, parent=parent, keep=KEEP, history=history, individual_factory=Individual,
                           seed=seed)
        result = evolve(parent, screen, dataclasses.replace(config, population_size=2 * KEEP))
        notes = screen.notes
    else:
        result = evolve(parent, evaluate, config)
    best = result.best
    predict = torch_predict_fn(best.extra["module"].eval())
    test_accuracy = score_predictions("classes", y_test, to_predictions("classes", predict(X_test)))
    return Search(arm, seed, [(i.genome, i.score) for i in trained], best.genome, float(best.score),
                  float(test_accuracy), time.perf_counter() - start, time.process_time() - cpu_start, notes)


def _observations(done: Search, parent: dict) -> list[GenomeObservation]:
    parent_score = done.trained[0][1]  # generation 0 trains the parent first
    return [GenomeObservation(parent, genome, float(score) - float(parent_score))
            for genome, score in done.trained[1:] if score is not None]


def _summary(searches: list[Search]) -> list[dict[str, Any]]:
    rows = []
    for arm in ("plain", "pre-screened"):
        mine = [s for s in searches if s.arm == arm]
        needed = [s.needed() for s in mine]
        rows.append({
            "arm": arm, "searches": len(mine), "trained_each": len(mine[0].trained),
            **{f"mean_best_val@{k}": statistics.fmean(s.best_after(k) for s in mine) for k in CHECKPOINTS},
            "mean_best_test": statistics.fmean(s.test_accuracy for s in mine),
            f"reached_{TARGET_VAL:g}": f"{sum(n is not None for n in needed)}/{len(mine)}",
            # A search that never reached the target counts as one more than it trained.
            "mean_needed": statistics.fmean(n or len(s.trained) + 1 for n, s in zip(needed, mine, strict=True)),
            "cpu_s": round(sum(s.cpu_seconds for s in mine), 1),
        })
    return rows


def run() -> dict[str, Any]:
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data, _, _ = _data()
        parent, parent_state = _parent(data)
        warmup = search("plain", HISTORY_SEED, parent, parent_state, [])
        history = _observations(warmup, parent)
        jobs = [(arm, seed) for seed in SEEDS for arm in ("plain", "pre-screened")]
        with ProcessPoolExecutor(PROCESSES, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(search, arm, seed, parent, parent_state, history) for arm, seed in jobs]
            searches = [f.result() for f in futures]
    finally:
        torch.set_num_threads(previous_threads)

    table = []
    for s in searches:
        table.append({
            "arm": s.arm, "seed": s.seed, "trained": len(s.trained),
            **{f"best_val@{k}": s.best_after(k) for k in CHECKPOINTS},
            "best_test": s.test_accuracy, f"needed_for_{TARGET_VAL:g}": s.needed(),
            "best_genome": genome_summary(s.best_genome), "cpu_s": round(s.cpu_seconds, 1),
        })
    plain, screened = _summary(searches)
    # Strict: pre-screening must do better than the plain search; a tie (the same genomes trained,
    # or no screening at all) is not a win.
    targets = [
        target(f"pre-screened mean best validation accuracy after {k} trained > plain",
               f"> {plain[f'mean_best_val@{k}']:.6f}", round(screened[f"mean_best_val@{k}"], 6),
               screened[f"mean_best_val@{k}"] > plain[f"mean_best_val@{k}"])
        for k in (CHECKPOINTS[1], CHECKPOINTS[-1])
    ]
    targets.append(target(f"mean candidates trained to reach validation accuracy {TARGET_VAL:g} "
                          f"({CHECKPOINTS[-1] + 1} if never) < plain", f"< {plain['mean_needed']:.2f}",
                          screened["mean_needed"], screened["mean_needed"] < plain["mean_needed"]))
    notes = [
        f"history for the genome scorer: one earlier plain search (seed {HISTORY_SEED}) of {len(warmup.trained)} "
        f"candidates, {warmup.cpu_seconds:.0f} s CPU, counted in neither arm",
        f"parent: {genome_summary(parent)}, validation accuracy {warmup.trained[0][1]:.4f} after retraining",
        *(f"pre-screened seed {s.seed}: " + "; ".join(s.notes) for s in searches if s.arm == "pre-screened"),
    ]
    return {"table": table, "tables": {"summary (means over seeds)": [plain, screened]}, "targets": targets,
            "notes": notes,
            "config": {"keep": KEEP, "generations": GENERATIONS, "seeds": list(SEEDS), "target_val": TARGET_VAL,
                       "objectives": list(OBJECTIVES), "candidate_train": dataclasses.asdict(CANDIDATE_TRAIN),
                       "bred_factor_prescreened": 2, "processes": PROCESSES}}
