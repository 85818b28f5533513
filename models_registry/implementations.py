"""Load runnable implementations of a task: a neural version on its runtime, or the algorithm.

Both become a ``predict_fn(X) -> ndarray``. Loaded objects are cached per process keyed by
what makes them unique (version id + sha256, task id + dataset sha256), so the serving hot
path never reads a file twice.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch

from models_registry.choices import Runtime
from models_registry.datasets import dataset_load
from models_registry.loading import load_implementation
from models_registry.models import ModelVersion, Task
from models_registry.nn.genome import build_module
from models_registry.nn.runtimes import make_predict_fn
from models_registry.selectors import algorithm_tuning_of
from models_registry.weights import blob_load, weights_load

PredictFn = Callable[[np.ndarray], np.ndarray]


class _LRU:
    def __init__(self, size: int) -> None:
        self._items: OrderedDict = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get_or_create(self, key, factory):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = factory()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_modules = _LRU(64)
_predictors = _LRU(64)
_algorithms = _LRU(32)


def task_dataset(task: Task):
    return dataset_load(task.dataset_file, sha256=task.dataset_sha256)


def version_module(version: ModelVersion) -> torch.nn.Module:
    """The fp32 module of a version with its verified weights, in eval mode (cached)."""

    def factory() -> torch.nn.Module:
        module = build_module(version.genome)
        state = weights_load(version.weights_file, sha256=version.weights_sha256)
        module.load_state_dict(state, strict=True)
        module.eval()
        return module

    return _modules.get_or_create((version.pk, version.weights_sha256), factory)


def fresh_version_module(version: ModelVersion) -> torch.nn.Module:
    """An uncached copy, safe to train in place (candidates start from it)."""
    module = build_module(version.genome)
    module.load_state_dict(weights_load(version.weights_file, sha256=version.weights_sha256), strict=True)
    return module


def version_predict_fn(version: ModelVersion) -> PredictFn:
    def factory() -> PredictFn:
        if version.runtime in (Runtime.ONNX_FP32, Runtime.ONNX_INT8):
            onnx_bytes = blob_load(version.artifact_file, sha256=version.artifact_sha256)
            return make_predict_fn(version.runtime, onnx_bytes=onnx_bytes)
        return make_predict_fn(version.runtime, module=version_module(version))

    return _predictors.get_or_create((version.pk, version.weights_sha256, version.runtime), factory)


def algorithm_params_of(task: Task) -> dict:
    """The settings the task's algorithm was tuned to, if they were tuned for its current path."""
    tuning = algorithm_tuning_of(task)
    return tuning["params"] if tuning else {}


def algorithm_for_task(task: Task):
    """The task's algorithmic implementation with its tuned settings, fitted on the training split (cached)."""
    params = algorithm_params_of(task)

    def factory():
        implementation = load_implementation(task.algorithm_path, params)
        X_train, y_train = task_dataset(task).train
        implementation.fit(X_train, y_train)
        return implementation

    key = (task.pk, task.dataset_sha256, task.algorithm_path, json.dumps(params, sort_keys=True))
    return _algorithms.get_or_create(key, factory)


def algorithm_predict_fn(task: Task) -> PredictFn:
    return algorithm_for_task(task).predict


def caches_clear() -> None:
    for cache in (_modules, _predictors, _algorithms):
        cache.clear()
