"""Distillation on the pattern-recognition task: how much of the teacher–student gap it closes.

Teacher: a small CNN trained on the digits (±1 pixel shift augmentation, a
fixed cosine schedule run to its end: its validation accuracy reaches 1.0
within a few epochs, so keeping the best-validation weights would keep an
undertrained teacher). Student: an MLP, trained three ways from the same
initial weights and seed:

- ``alone``: the labelled training split only, no teacher;
- ``distilled``: ``improvement.nn.distillation.distill`` — the product's
  distillation — with soft targets (temperature T, weight alpha) plus the hard
  labels, and each epoch K perturbed copies of every training image
  (``improvement.nn.distillation.perturbed_inputs``: ±1 pixel shifts, pixel
  noise, blends with another image, as the distillation strategy makes them)
  that the teacher labels: function matching, trained patiently;
- ``control``: the same perturbed images but labelled with the label of the
  image each was made from, no teacher. It separates what the teacher adds
  from what the extra images add on their own.

Every arm takes the same number of optimiser steps (``alone`` runs
``EPOCHS × (1 + K)`` epochs of the training split; the others ``EPOCHS`` epochs
of the split plus K copies) with the same optimiser and schedule, and keeps its
best-validation weights.

The test split has 269 images, so one image is 0.37 points and the gap between
teacher and student alone is about five images: one split measures the fraction
in steps of about 0.2. The benchmark therefore repeats everything — teacher
included — on several independent stratified splits of the digits and pools
them: fraction of the gap closed = (mean distilled − mean alone) /
(mean teacher − mean alone), test split. Target (from the issue): ≥ 0.8.

Choosing settings honestly: the recipe (student width, K, T, alpha, epochs,
perturbations) was settled on development splits 0–8. A first held-out run on
splits 100–105, when the trainer kept the *first* epoch at the best validation
accuracy, closed 0.73 of the gap (0.95 for the reference width): short of the
target and far apart, the noise of six splits. Every epoch's weights on
development splits 0–7 then showed that the first best-validation epoch is
often an early, undertrained one (validation accuracy on 269 images plateaus),
so the trainer now keeps the last epoch tied at the best score, for every arm
alike. The splits reported here (``SPLITS``, 200 onwards, ten of them) were not
used to choose anything. Splits run in parallel processes, one torch thread each.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bench.common import Splits, digits_splits, target
from improvement.nn.distillation import distill, perturbed_inputs
from improvement.strategies import distillation as strategy
from models_registry.nn.evaluation import score_predictions, to_predictions, torch_predict_fn
from models_registry.nn.genome import build_module, count_parameters, genome_summary, set_normalisation
from models_registry.nn.runtimes import export_onnx, onnx_predict_fn
from models_registry.nn.training import TrainConfig, TrainData, shift_augment, train_module

NAME = "distillation"
DESCRIPTION = "CNN teacher -> MLP student on digits: fraction of the accuracy gap distillation closes"

TEACHER_GENOME: dict[str, Any] = {
    "kind": "cnn",
    "input_shape": [1, 8, 8],
    "output_dim": 10,
    "channels": [16, 32],
    "kernels": [3, 3],
    "pool": [False, True],
    "hidden": [64],
    "dropout": 0.1,
    "norm": "batch",
}
TEACHER_CONFIG = TrainConfig(epochs=80, patience=10**6, lr_schedule="cosine", seed=0, restore_best=False)
# The reported student has half the teacher's parameters. BENCH_DISTILLATION_REFERENCE=128 measures
# other widths alongside (alone and distilled), for reference.
STUDENT_HIDDEN = [256]
REFERENCE_HIDDEN = [int(v) for v in os.environ.get("BENCH_DISTILLATION_REFERENCE", "").split(",") if v]
STUDENTS = [STUDENT_HIDDEN, *([h] for h in REFERENCE_HIDDEN)]  # the reported student first
SPLITS = tuple(
    int(v) for v in os.environ.get("BENCH_DISTILLATION_SPLITS", ",".join(str(s) for s in range(200, 210))).split(",")
)
SEED = 0  # the students' initial weights and batch order
EPOCHS = 160
# K (perturbed copies of each training image added per epoch), T and alpha: the strategy's own.
EXTRA_COPIES, TEMPERATURE, ALPHA = strategy.EXTRA_COPIES, strategy.TEMPERATURE, strategy.ALPHA
PROCESSES = int(os.environ.get("BENCH_DISTILLATION_PROCESSES", str(min(2, os.cpu_count() or 1))))
GAP_TARGET = 0.8


def _student_genome(hidden: list[int]) -> dict[str, Any]:
    return {"kind": "mlp", "input_shape": [1, 8, 8], "output_dim": 10, "hidden": hidden}


def _accuracy(predict: Callable[[np.ndarray], np.ndarray], X: np.ndarray, y: np.ndarray) -> float:
    return score_predictions("classes", y, to_predictions("classes", predict(X)))


def _extra(splits: Splits, split: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The epoch's perturbed copies and their source labels: the same for the distilled and control arms."""
    rng = np.random.default_rng([split, SEED, epoch, 7919])
    X, source = perturbed_inputs(splits.X_train, rng, count=EXTRA_COPIES * len(splits.X_train))
    return X, splits.y_train[source]


# --------------------------------------------------------------------------- arms


def _fresh_student(hidden: list[int], splits: Splits) -> torch.nn.Module:
    module = build_module(_student_genome(hidden), seed=SEED)
    set_normalisation(module, splits.X_train)
    return module


def _config(epochs: int) -> TrainConfig:
    # Patience longer than the run: every arm uses its full step budget; best-val weights are kept.
    return TrainConfig(epochs=epochs, patience=10**6, lr_schedule="cosine", seed=SEED)


def _scores(module: torch.nn.Module, splits: Splits) -> dict[str, float]:
    predict = torch_predict_fn(module)
    return {
        "test": _accuracy(predict, splits.X_test, splits.y_test),
        "val": _accuracy(predict, splits.X_val, splits.y_val),
    }


def train_alone(hidden: list[int], splits: Splits, data: TrainData) -> dict[str, float]:
    student = _fresh_student(hidden, splits)
    train_module(student, data, output_kind="classes", config=_config(EPOCHS * (1 + EXTRA_COPIES)))
    return _scores(student, splits)


def train_control(hidden: list[int], split: int, splits: Splits, data: TrainData) -> dict[str, float]:
    student = _fresh_student(hidden, splits)
    train_module(student, data, output_kind="classes", config=_config(EPOCHS),
                 extra_data=lambda epoch: _extra(splits, split, epoch))
    return _scores(student, splits)


def train_distilled(
    hidden: list[int], split: int, splits: Splits, data: TrainData, teacher_fn: Callable
) -> dict[str, float]:
    student = _fresh_student(hidden, splits)
    distill(
        student,
        teacher_fn,
        data,
        output_kind="classes",
        config=_config(EPOCHS),
        extra_inputs=lambda epoch: _extra(splits, split, epoch)[0],  # unlabelled: the teacher labels them
        temperature=TEMPERATURE,
        alpha=ALPHA,
    )
    return _scores(student, splits)


def train_teacher(splits: Splits, data: TrainData) -> tuple[torch.nn.Module, dict[str, Any]]:
    teacher = build_module(TEACHER_GENOME, seed=0)
    set_normalisation(teacher, splits.X_train)
    result = train_module(teacher, data, output_kind="classes", config=TEACHER_CONFIG, augment=shift_augment(1))
    return teacher, {"seconds": round(result.seconds, 1), "epochs": result.epochs_run, **_scores(teacher, splits)}


def run_split(split: int) -> dict[str, Any]:
    """Teacher and every student arm on one split of the digits; one torch thread."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    splits = digits_splits(split)
    data = TrainData(splits.X_train, splits.y_train, splits.X_val, splits.y_val)
    teacher, teacher_info = train_teacher(splits, data)
    # The teacher is served through ONNX Runtime (fp32): the same function, several times faster per
    # batch than torch eager here, and distill() accepts any function as a teacher.
    teacher_fn = onnx_predict_fn(export_onnx(teacher))
    teacher_info["onnx_test"] = _accuracy(teacher_fn, splits.X_test, splits.y_test)
    arms: dict[str, dict[str, float]] = {"teacher": teacher_info}
    for hidden in STUDENTS:
        width = hidden[0]
        arms[f"alone {width}"] = train_alone(hidden, splits, data)
        arms[f"distilled {width}"] = train_distilled(hidden, split, splits, data, teacher_fn)
        if hidden == STUDENT_HIDDEN:
            arms[f"control {width}"] = train_control(hidden, split, splits, data)
    return {"split": split, "arms": arms, "seconds": round(time.perf_counter() - start, 1)}


# --------------------------------------------------------------------------- benchmark


def _gap_closed(teacher: float, alone: float, student: float) -> float | None:
    gap = teacher - alone
    return (student - alone) / gap if gap > 0 else None


def _run_splits() -> list[dict[str, Any]]:
    if PROCESSES <= 1:
        return [run_split(s) for s in SPLITS]
    # spawn: a fresh interpreter per worker, no inherited torch/OpenMP thread state.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=PROCESSES, mp_context=context) as pool:
        return list(pool.map(run_split, SPLITS))


def run() -> dict[str, Any]:
    start = time.perf_counter()
    results = _run_splits()

    def mean(arm: str, key: str = "test") -> float:
        return float(np.mean([r["arms"][arm][key] for r in results]))

    T = mean("teacher")
    rows: list[dict[str, Any]] = [
        {"model": "teacher", "genome": genome_summary(TEACHER_GENOME), "params": _params(TEACHER_GENOME),
         "val_acc": mean("teacher", "val"), "test_acc": T, "gap_closed": None}
    ]
    fractions: dict[int, float | None] = {}
    for hidden in STUDENTS:
        width = hidden[0]
        genome = _student_genome(hidden)
        A = mean(f"alone {width}")
        arms = ["alone", "distilled"] + (["control"] if hidden == STUDENT_HIDDEN else [])
        for arm in arms:
            value = mean(f"{arm} {width}")
            label = {"alone": "student alone", "distilled": "student distilled",
                     "control": "student control (extra images, own labels, no teacher)"}[arm]
            rows.append({"model": label if hidden == STUDENT_HIDDEN else f"reference {label}",
                         "genome": genome_summary(genome), "params": _params(genome),
                         "val_acc": mean(f"{arm} {width}", "val"), "test_acc": value,
                         "gap_closed": _gap_closed(T, A, value)})
        fractions[width] = _gap_closed(T, A, mean(f"distilled {width}"))

    width = STUDENT_HIDDEN[0]
    per_split = []
    for r in results:
        a = r["arms"]
        per_split.append({
            "split": r["split"], "teacher": a["teacher"]["test"], "alone": a[f"alone {width}"]["test"],
            "distilled": a[f"distilled {width}"]["test"], "control": a[f"control {width}"]["test"],
            "gap_closed": _gap_closed(a["teacher"]["test"], a[f"alone {width}"]["test"],
                                      a[f"distilled {width}"]["test"]),
            "seconds": r["seconds"],
        })
    value = fractions[width]
    student_desc = genome_summary(_student_genome(STUDENT_HIDDEN))
    return {
        "tables": {f"per split ({student_desc}, test accuracy)": per_split},
        "table": rows,
        "targets": [
            target(
                f"fraction of the teacher-student gap closed by distillation ({student_desc}, "
                f"pooled over {len(SPLITS)} splits, test)",
                f">= {GAP_TARGET:g}",
                None if value is None else round(value, 3),
                value is not None and value >= GAP_TARGET,
            )
        ],
        "reference_gap_closed": {str(w): fractions[w] for w in REFERENCE_HIDDEN},
        "per_split": results,
        "settings": {
            "student_hidden": STUDENT_HIDDEN,
            "reference_hidden": REFERENCE_HIDDEN,
            "splits": list(SPLITS),
            "seed": SEED,
            "epochs": EPOCHS,
            "alone_epochs": EPOCHS * (1 + EXTRA_COPIES),
            "extra_copies": EXTRA_COPIES,
            "temperature": TEMPERATURE,
            "alpha": ALPHA,
            "teacher_train": dataclasses.asdict(TEACHER_CONFIG),
            "torch_threads": 1,
            "processes": PROCESSES,
        },
        "notes": [
            f"{len(SPLITS)} independent stratified splits (teacher retrained on each), 269 test images each; "
            "the fraction is pooled: (mean distilled - mean alone) / (mean teacher - mean alone)",
            "control = the same extra images with their source images' labels and no teacher: "
            "the difference between distilled and control is what the teacher adds",
            "recipe settled on development splits 0-8 and the tie rule on 0-7; the reported splits were not "
            "used to choose anything (a first held-out run on 100-105 is described in the module docstring)",
        ],
        "elapsed_s": round(time.perf_counter() - start, 1),
    }


def _params(genome: dict[str, Any]) -> int:
    return count_parameters(build_module(genome, seed=0))
