"""Train a genome on a task's data: the glue between the registry and the pure-torch loop.

Adds what a task offers beyond its training split — ±1 pixel shifts for image inputs and
fresh algorithm-labelled samples for tasks that have a generator — and reports progress.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from models_registry.choices import OutputKind
from models_registry.data.builtin import BUILTIN_DATASETS
from models_registry.data.upload import parse_sampler_spec
from models_registry.evaluation import candidate_evaluate
from models_registry.implementations import algorithm_for_task, task_dataset
from models_registry.models import ModelVersion, NeuralModel, Task
from models_registry.nn.augment import augmentation
from models_registry.nn.genome import build_module, set_normalisation
from models_registry.nn.kinds import IMAGE, SIGNAL, input_kind
from models_registry.nn.training import TrainConfig, TrainData, TrainResult, shift_augment, train_module
from models_registry.services import version_create

ExtraData = Callable[[int], tuple[np.ndarray, np.ndarray] | None]


def task_train_data(task: Task) -> TrainData:
    dataset = task_dataset(task)
    X_train, y_train = dataset.train
    X_val, y_val = dataset.val
    return TrainData(X_train=X_train, y_train=y_train, X_val=X_val, y_val=y_val)


def task_augment(task: Task):
    """The default augmentation of a classification task's inputs (a search tunes its own).

    Images shift by a pixel; signals roll by up to an eighth of their length, since a class is a
    shape wherever it sits. Tables and regression targets are left alone: a shifted input may
    have another value.
    """
    if task.output_kind != OutputKind.CLASSES:
        return None
    kind = input_kind(task.input_shape, named_columns=bool(task.feature_names))
    if kind == IMAGE:
        return shift_augment(1)
    if kind == SIGNAL:
        return augmentation(SIGNAL, "shift", 0.5)
    return None


def task_sampler(task: Task) -> Callable[[int, np.random.Generator], np.ndarray] | None:
    """A sampler of fresh inputs for the task, when it has one (built-in generator or spec)."""
    if task.builtin_key:
        spec = BUILTIN_DATASETS.get(task.builtin_key)
        if spec is not None and getattr(spec, "sample_inputs", None) is not None:
            return spec.sample_inputs
    if task.sampler_spec:
        sampler = parse_sampler_spec(task.sampler_spec)
        return sampler.sample
    return None


def task_labeller(task: Task) -> Callable[[np.ndarray], np.ndarray] | None:
    """The algorithm as labeller of fresh inputs, for tasks whose data it generated."""
    if task_sampler(task) is None:
        return None
    return algorithm_for_task(task).predict


def generated_data(task: Task, *, per_epoch: int, seed: int) -> ExtraData | None:
    """Fresh samples labelled by the algorithm, a new batch every epoch (system-generated data)."""
    sampler = task_sampler(task)
    labeller = task_labeller(task)
    if sampler is None or labeller is None or per_epoch <= 0:
        return None
    rng = np.random.default_rng(seed)

    def extra(epoch: int) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(sampler(per_epoch, rng), dtype=np.float32)
        y = np.asarray(labeller(X))
        if task.output_kind == OutputKind.VALUES and y.ndim == 1:
            y = y.reshape(-1, 1)
        return X, y.astype(np.float32) if task.output_kind != OutputKind.CLASSES else y.astype(np.int64)

    return extra


def neural_fit(
    task: Task, genome: dict, *, config: TrainConfig, module: torch.nn.Module | None = None,
    progress=None, extra_data: ExtraData | None = None, loss_fn=None,
) -> tuple[torch.nn.Module, TrainResult]:
    """Train ``module`` (or a fresh build of ``genome``) on the task; returns the best weights.

    Validation uses the task's metric unless ``config`` names one.
    """
    config = dataclasses.replace(config, metric=config.metric or task.metric)
    data = task_train_data(task)
    if module is None:
        torch.manual_seed(config.seed)
        module = build_module(genome)
        set_normalisation(module, data.X_train, data.y_train, task.output_kind)
    result = train_module(
        module, data, output_kind=task.output_kind, config=config, progress=progress,
        augment=task_augment(task), extra_data=extra_data, loss_fn=loss_fn,
    )
    module.eval()
    return module, result


# A short, fixed training budget for a model's first version: deliberately weak, but not random.
FIRST_VERSION_TRAIN = TrainConfig(epochs=3, batch_size=64, lr=3e-3, patience=3, seed=0)


def version_seed(*, model: NeuralModel, genome: dict, config: TrainConfig = FIRST_VERSION_TRAIN,
                 note: str = "seeded weak model") -> ModelVersion:
    """Train ``genome`` briefly on the model's task and make it the model's first, active version."""
    module, _ = neural_fit(model.task, genome, config=config)
    evaluation = candidate_evaluate(task=model.task, module=module)
    return version_create(model=model, genome=genome, state_dict=module.state_dict(), evaluation=evaluation,
                          activate=True, note=note, reason="initial version")


__all__ = ["neural_fit", "generated_data", "task_train_data", "task_sampler", "task_labeller", "version_seed"]
