"""Evaluation of implementations on a task's held-out test split, recorded as samples.

A candidate is evaluated by exactly the same function as the active version it competes
with (``candidate_evaluate``), so promotion compares like with like.
"""

from __future__ import annotations

import numpy as np
import torch

from models_registry.choices import Runtime
from models_registry.implementations import algorithm_predict_fn, task_dataset, version_predict_fn
from models_registry.models import ModelVersion, PerformanceSample, Task
from models_registry.nn.evaluation import EvaluationResult, evaluate
from models_registry.nn.genome import count_parameters
from models_registry.nn.runtimes import make_predict_fn
from models_registry.services import performance_sample_record
from models_registry.weights import state_dict_to_bytes


def _test_split(task: Task) -> tuple[np.ndarray, np.ndarray]:
    return task_dataset(task).test


def runtime_size_bytes(module: torch.nn.Module, runtime: str, onnx_bytes: bytes | None = None) -> int:
    """Bytes the runtime needs for the weights: the ONNX file, or the serialized tensors.

    For torch int8 the Linear weights count one byte per element (dynamic quantization
    stores them as int8) and everything else four.
    """
    if onnx_bytes is not None and runtime in (Runtime.ONNX_FP32, Runtime.ONNX_INT8):
        return len(onnx_bytes)
    if runtime == Runtime.TORCH_INT8:
        total = 0
        for sub in module.modules():
            for name, param in sub.named_parameters(recurse=False):
                per = 1 if isinstance(sub, torch.nn.Linear) and name == "weight" else 4
                total += param.numel() * per
        return total + sum(b.numel() * 4 for b in module.buffers())
    return len(state_dict_to_bytes(module.state_dict()))


def candidate_evaluate(
    *, task: Task, module: torch.nn.Module, runtime: str = Runtime.TORCH_FP32, onnx_bytes: bytes | None = None,
    measure: bool = True,
) -> EvaluationResult:
    module.eval()
    predict_fn = make_predict_fn(runtime, module=module, onnx_bytes=onnx_bytes)
    X_test, y_test = _test_split(task)
    return evaluate(
        predict_fn, X_test, y_test, task.output_kind, n_parameters=count_parameters(module),
        size_bytes=runtime_size_bytes(module, runtime, onnx_bytes), measure=measure,
    )


def version_evaluate(*, version: ModelVersion, measure: bool = True) -> PerformanceSample:
    task = version.model.task
    X_test, y_test = _test_split(task)
    result = evaluate(
        version_predict_fn(version), X_test, y_test, task.output_kind, n_parameters=version.n_parameters,
        size_bytes=version.size_bytes, measure=measure,
    )
    return performance_sample_record(task=task, evaluation=result, version=version)


def algorithm_evaluate(*, task: Task, measure: bool = True) -> PerformanceSample:
    X_test, y_test = _test_split(task)
    result = evaluate(algorithm_predict_fn(task), X_test, y_test, task.output_kind, measure=measure)
    return performance_sample_record(task=task, evaluation=result)
