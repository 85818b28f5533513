"""Evaluation of implementations on a task's held-out splits, recorded as samples.

* Decisions read the **gate** split: ``candidate_evaluate`` judges a candidate exactly as the
  active version it competes with, with the task's metric, keeping each row's prediction and
  every timed repeat for the gate's paired tests.
* Reports read the **sealed test** split, only through ``sealed_test_report`` (the score and its
  95 % interval); the split refuses to be read inside a decision (``models_registry.sealed``).
* ``performance_sample_record`` is the one write of an evaluation sample; ``version_rescore``
  the one change of a version's stored scores (its task's splits changed).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from django.db import transaction

from models_registry.choices import Implementation, OutputKind, Runtime, SampleSource, ScoreSplit
from models_registry.errors import RegistryError
from models_registry.implementations import (
    PredictFn,
    algorithm_predict_fn,
    task_dataset,
    version_predict_fn,
)
from models_registry.models import ModelVersion, PerformanceSample, Task
from models_registry.nn.evaluation import EvaluationResult, evaluate
from models_registry.nn.genome import count_parameters
from models_registry.nn.metrics import check_metric
from models_registry.nn.runtimes import make_predict_fn
from models_registry.nn.significance import score_interval
from models_registry.weights import state_dict_to_bytes


@dataclasses.dataclass(frozen=True)
class SealedReport:
    """A score on the sealed test split, for reports: read by no decision."""

    score: float
    ci95: tuple[float, float]
    n_rows: int
    metric: str


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


def gate_evaluate(task: Task, predict_fn: PredictFn, *, measure: bool = True, n_parameters: int | None = None,
                  size_bytes: int | None = None) -> EvaluationResult:
    """Any implementation on the task's gate split, with the task's metric."""
    X_gate, y_gate = task_dataset(task).gate
    return evaluate(predict_fn, X_gate, y_gate, task.output_kind, metric=task.metric, split=ScoreSplit.GATE,
                    n_parameters=n_parameters, size_bytes=size_bytes, measure=measure)


def sealed_test_report(task: Task, predict_fn: PredictFn) -> SealedReport:
    """The implementation's score on the sealed test split with its 95 % interval (reports only)."""
    X_test, y_test = task_dataset(task).sealed_test()
    result = evaluate(predict_fn, X_test, y_test, task.output_kind, metric=task.metric, split=ScoreSplit.TEST,
                      measure=False)
    assert result.predictions is not None
    ci = score_interval(task.metric, np.asarray(y_test), result.predictions, n_boot=500)
    return SealedReport(score=result.score, ci95=ci, n_rows=result.n_rows, metric=task.metric)


def candidate_evaluate(
    *, task: Task, module: torch.nn.Module, runtime: str = Runtime.TORCH_FP32, onnx_bytes: bytes | None = None,
    measure: bool = True,
) -> EvaluationResult:
    """A candidate (or the active version, rebuilt) on the gate split, as the promotion gate compares them."""
    module.eval()
    predict_fn = make_predict_fn(runtime, module=module, onnx_bytes=onnx_bytes)
    return gate_evaluate(task, predict_fn, measure=measure, n_parameters=count_parameters(module),
                         size_bytes=runtime_size_bytes(module, runtime, onnx_bytes))


def performance_sample_record(
    *, task: Task, evaluation: EvaluationResult, version: ModelVersion | None = None,
    source: str = SampleSource.EVALUATION, extra: dict | None = None,
) -> PerformanceSample:
    latency = evaluation.latency or {}
    return PerformanceSample.objects.create(
        task=task, version=version,
        implementation=Implementation.NEURAL if version is not None else Implementation.ALGORITHMIC,
        source=source, split=evaluation.split if source == SampleSource.EVALUATION else "",
        score=evaluation.score, metric=evaluation.metric,
        latency_p50_ms=latency.get("p50_ms_b1"), latency_p95_ms=latency.get("p95_ms_b1"),
        latency_p99_ms=latency.get("p99_ms_b1"), latency_p50_ms_batch=latency.get("p50_ms_b256"),
        latency_p95_ms_batch=latency.get("p95_ms_b256"), n_parameters=evaluation.n_parameters,
        size_bytes=evaluation.size_bytes, extra={"n_rows": evaluation.n_rows, **(extra or {})},
    )


def _test_sample(task: Task, report: SealedReport, version: ModelVersion | None) -> PerformanceSample:
    return PerformanceSample.objects.create(
        task=task, version=version, source=SampleSource.EVALUATION, split=ScoreSplit.TEST, score=report.score,
        metric=report.metric,
        implementation=Implementation.NEURAL if version is not None else Implementation.ALGORITHMIC,
        extra={"n_rows": report.n_rows, "ci95": list(report.ci95)},
    )


def version_evaluate(*, version: ModelVersion, measure: bool = True) -> PerformanceSample:
    """Measure a version on the gate split now (a gate sample); returns the sample."""
    task = version.model.task
    result = gate_evaluate(task, version_predict_fn(version), measure=measure,
                           n_parameters=version.n_parameters, size_bytes=version.size_bytes)
    return performance_sample_record(task=task, evaluation=result, version=version)


def algorithm_evaluate(*, task: Task, measure: bool = True, extra: dict | None = None) -> PerformanceSample:
    """The task's algorithm on the gate split (the sample decisions read) and on the sealed test split."""
    predict_fn = algorithm_predict_fn(task)
    result = gate_evaluate(task, predict_fn, measure=measure)
    with transaction.atomic():
        sample = performance_sample_record(task=task, evaluation=result, extra=extra)
        _test_sample(task, sealed_test_report(task, predict_fn), None)
    return sample


def version_rescore(*, version: ModelVersion, measure: bool = True) -> ModelVersion:
    """Re-measure a version's gate and test scores on its task's current splits (the one place they change).

    Used when a task's splits changed under existing versions: tasks made before the gate
    split existed (``score_split`` = legacy_test) and datasets that grow.
    """
    task = version.model.task
    predict_fn = version_predict_fn(version)
    gate = gate_evaluate(task, predict_fn, measure=measure, n_parameters=version.n_parameters,
                         size_bytes=version.size_bytes)
    report = sealed_test_report(task, predict_fn)
    latency = gate.latency or {}
    fields = {"score": gate.score, "score_split": ScoreSplit.GATE, "metric": gate.metric,
              "test_score": report.score, "test_ci95_low": report.ci95[0], "test_ci95_high": report.ci95[1]}
    if latency:
        fields.update(latency_p50_ms=latency.get("p50_ms_b1"), latency_p95_ms=latency.get("p95_ms_b1"),
                      latency_p95_ms_batch=latency.get("p95_ms_b256"))
    # The splits changed: a reference taken on the old gate rows means nothing on the new ones.
    fields["metrics"] = {**(version.metrics or {}), "n_rows": gate.n_rows, "metric": gate.metric,
                         "score_reference": gate.score}
    with transaction.atomic():
        ModelVersion.objects.filter(pk=version.pk).update(**fields)
        performance_sample_record(task=task, evaluation=gate, version=version)
        _test_sample(task, report, version)
    for name, value in fields.items():
        setattr(version, name, value)
    return version


def version_score_reference(version: ModelVersion) -> float | None:
    """The score a "score held" promotion over ``version`` is measured from, when it was taken on
    the task's current gate rows with the task's metric; None otherwise (the baseline measured
    now is the reference then)."""
    metrics = version.metrics or {}
    reference = metrics.get("score_reference")
    task = version.model.task
    if (reference is None or version.score is None or version.score_split != ScoreSplit.GATE
            or metrics.get("n_rows") != task.n_gate or (version.metric or metrics.get("metric")) != task.metric):
        return None
    return max(float(reference), version.score)


def versions_rescore_legacy(*, limit: int = 20) -> int:
    """Re-measure up to ``limit`` versions whose score was taken on an old test split; returns how many."""
    done = 0
    for version in (ModelVersion.objects.filter(score_split=ScoreSplit.LEGACY_TEST).select_related("model__task")
                    .order_by("-is_active", "pk")[:limit]):
        version_rescore(version=version)
        done += 1
    for task in Task.objects.filter(performance_samples__split=ScoreSplit.LEGACY_TEST).exclude(algorithm_path="").distinct():
        if not PerformanceSample.objects.filter(task=task, version=None, split=ScoreSplit.GATE).exists():
            algorithm_evaluate(task=task)
    return done


def task_metric_change(*, task: Task, metric: str) -> Task:
    """Judge a task by another metric from now on: every version and the algorithm are re-measured with it.

    Scores of different metrics are not comparable, so nothing is left scored the old way.
    """
    n_classes = task.n_outputs if task.output_kind == OutputKind.CLASSES else None
    try:
        check_metric(metric, task.output_kind, n_classes=n_classes)
    except ValueError as exc:
        raise RegistryError(str(exc)) from None
    if metric == task.metric:
        return task
    Task.objects.filter(pk=task.pk).update(metric=metric)
    task.metric = metric
    for version in ModelVersion.objects.filter(model__task=task).select_related("model__task"):
        version.model.task = task
        version_rescore(version=version)
    if task.algorithm_path:
        algorithm_evaluate(task=task)
    return task
