"""Everything a run's strategy works with, built from the database: data, budgets, the teacher.

``context_build`` turns a run and its baseline version into a ``StrategyContext`` (plain data
and modules; strategies never touch the database). A strategy declares the parts it needs
beyond the basics (``Strategy.needs``): ``NEED_TEACHER`` adds the best other implementation of
the task. The architecture search's population evaluator is added by the run's execution.
"""

from __future__ import annotations

import numpy as np
import torch
from django.conf import settings

from improvement.models import ImprovementConfig, ImprovementRun, run_budget_cap_s
from improvement.strategies.registry import NEED_TEACHER, StrategyContext, get_strategy
from models_registry.choices import OutputKind, Runtime
from models_registry.evaluation import candidate_evaluate
from models_registry.implementations import algorithm_for_task, fresh_version_module
from models_registry.models import ModelVersion, Task
from models_registry.nn.evaluation import EvaluationResult
from models_registry.nn.kinds import input_kind
from models_registry.nn.training import TrainConfig
from models_registry.sealed import deciding
from models_registry.selectors import algorithm_latest_sample, version_best_in_task
from models_registry.training import generated_data, task_augment, task_sampler, task_train_data
from models_registry.weights import blob_load


def torch_threads_configure() -> None:
    """Several workers on one machine must not each grab every core."""
    threads = settings.PLASTICITY_TORCH_THREADS
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------------- teacher


def teacher_for(task: Task, *, exclude_model_id: int | None, min_score: float = 0.0):
    """The best other implementation of the task: (teacher_fn, module or None, label, score).

    A neural version of another model, or the algorithmic implementation if it scores higher —
    on the gate split: choosing the teacher is a decision.
    """
    with deciding("teacher"):
        return _teacher_for(task, exclude_model_id=exclude_model_id, min_score=min_score)


def _teacher_for(task: Task, *, exclude_model_id: int | None, min_score: float):
    best_version = version_best_in_task(task=task, exclude_model=None)
    if best_version is not None and best_version.model_id == exclude_model_id:
        best_version = version_best_in_task(task=task, exclude_model=best_version.model)
    algo_sample = algorithm_latest_sample(task=task)
    algo_score = algo_sample.score if algo_sample is not None else None
    version_score = best_version.score if best_version is not None else None
    if algo_score is not None and (version_score is None or algo_score > version_score):
        if algo_score < min_score:
            return None
        return _algorithm_teacher(task), None, "algorithm", algo_score
    if best_version is None or (version_score or 0.0) < min_score:
        return None
    module = fresh_version_module(best_version).eval()

    def teach(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(x)

    return teach, module, f"{best_version.model} v{best_version.number}", version_score


def _algorithm_teacher(task: Task):
    algorithm = algorithm_for_task(task)
    n_classes = task.n_outputs

    def teach(x: torch.Tensor) -> torch.Tensor:
        out = np.asarray(algorithm.predict(x.detach().cpu().numpy()))
        if task.output_kind == OutputKind.CLASSES:
            # Hard labels as confident logits: the soft-target term then matches the labels.
            logits = np.full((len(out), n_classes), -5.0, dtype=np.float32)
            logits[np.arange(len(out)), out.astype(np.int64)] = 5.0
            return torch.from_numpy(logits)
        return torch.from_numpy(out.astype(np.float32).reshape(len(out), -1))

    return teach


def pseudo_label_data(task: Task, teacher_fn, X_train: np.ndarray, *, per_epoch: int, seed: int):
    """Extra data for tasks without a generator: jittered training inputs labelled by the teacher."""
    rng = np.random.default_rng(seed)
    scale = X_train.reshape(len(X_train), -1).std(axis=0).reshape(X_train.shape[1:]) * 0.05

    def extra(epoch: int):
        index = rng.integers(0, len(X_train), size=per_epoch)
        X = (X_train[index] + rng.normal(size=(per_epoch, *X_train.shape[1:])) * scale).astype(np.float32)
        with torch.no_grad():
            raw = teacher_fn(torch.from_numpy(X))
        raw = raw.detach().cpu().numpy() if isinstance(raw, torch.Tensor) else np.asarray(raw)
        if task.output_kind == OutputKind.CLASSES:
            return X, raw.argmax(axis=1).astype(np.int64)
        if task.output_kind == OutputKind.RECONSTRUCTION:
            return X, X
        return X, raw.astype(np.float32).reshape(per_epoch, -1)

    return extra


# --------------------------------------------------------------------------------- context


def context_build(run: ImprovementRun, baseline: ModelVersion, config: ImprovementConfig) -> StrategyContext:
    task = run.model.task
    strategy = get_strategy(run.strategy)
    data = task_train_data(task)
    seed = int(run.params.get("seed", run.pk or 0))
    # Never past the worker's own timeout, whatever an older row or an admin edit says.
    budget = min(float(run.params.get("time_budget_s", config.run_time_budget_s)), run_budget_cap_s())
    train_cfg = TrainConfig(
        epochs=int(run.params.get("epochs", 200)), batch_size=int(run.params.get("batch_size", 128)),
        lr=float(run.params.get("lr", 3e-3)), patience=int(run.params.get("patience", 12)), seed=seed,
        max_seconds=budget, metric=task.metric,
    )
    teacher = None
    if config.cross_model_distillation or NEED_TEACHER in strategy.needs:
        teacher = teacher_for(task, exclude_model_id=run.model_id)
    extra = generated_data(task, per_epoch=int(run.params.get("generated_per_epoch", 512)), seed=seed)
    if extra is None and teacher is not None and teacher[3] > (baseline.score or 0.0):
        extra = pseudo_label_data(task, teacher[0], data.X_train, per_epoch=min(1024, len(data.X_train)), seed=seed)
    return StrategyContext(
        output_kind=task.output_kind, input_shape=tuple(task.input_shape), genome=baseline.genome,
        module=fresh_version_module(baseline), data=data, train_config=train_cfg, seed=seed,
        time_budget_s=budget, score_tolerance=config.optimization_score_tolerance,
        latency_budget_ms=task.latency_budget_ms, augment=task_augment(task), extra_data=extra,
        sample_inputs=task_sampler(task), teacher_fn=teacher[0] if teacher else None,
        teacher_module=teacher[1] if teacher else None, teacher_label=teacher[2] if teacher else "",
        input_kind=input_kind(task.input_shape, named_columns=bool(task.feature_names)), params=dict(run.params),
    )


def baseline_evaluate(task: Task, baseline: ModelVersion, module: torch.nn.Module) -> EvaluationResult:
    """Measure the active version now, on this machine, with the candidate's evaluator."""
    onnx_bytes = None
    if baseline.runtime in (Runtime.ONNX_FP32, Runtime.ONNX_INT8):
        onnx_bytes = blob_load(baseline.artifact_file, sha256=baseline.artifact_sha256)
    return candidate_evaluate(task=task, module=module, runtime=baseline.runtime, onnx_bytes=onnx_bytes)
