"""Triggers read the task's metric: on an imbalanced task the metric decides what fires."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from django.utils import timezone

from improvement.models import ImprovementConfig
from improvement.scheduler.cycle import proposals_collect
from improvement.scheduler.triggers import triggered_strategies
from models_registry.evaluation import candidate_evaluate
from models_registry.nn.genome import build_module
from models_registry.nn.significance import wilson_interval
from models_registry.services import model_create, task_create_from_upload, version_create
from models_registry.serving.models import Feedback
from tests.factories import csv_task, version_with_score

pytestmark = pytest.mark.django_db

MAJORITY = {"kind": "mlp", "input_shape": [4], "output_dim": 2, "hidden": [4], "activation": "tanh",
            "dropout": 0.0, "norm": "none"}


def _imbalanced_csv(n: int = 600, minority: float = 0.1) -> bytes:
    rng = np.random.default_rng(0)
    y = (rng.random(n) < minority).astype(int)
    X = rng.normal(size=(n, 4)) + y[:, None] * 0.5
    lines = ["a,b,c,d,label"] + [",".join(f"{v:.4f}" for v in row) + f",{'rare' if t else 'common'}"
                                  for row, t in zip(X, y, strict=True)]
    return ("\n".join(lines) + "\n").encode()


def _majority_model(task):
    """A model that always answers the majority class: 90 % accurate, useless for the rare class."""
    module = build_module(MAJORITY)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.zero_()
        last = [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1]
        common = task.class_labels.index("common")
        last.bias[common] = 5.0
    model = model_create(task=task, name="majority")
    version = version_create(model=model, genome=MAJORITY, state_dict=module.state_dict(),
                             evaluation=candidate_evaluate(task=task, module=module, measure=False), activate=True)
    return model, version


def test_an_imbalanced_task_defaults_to_balanced_accuracy_and_its_trigger_fires():
    task = task_create_from_upload(name="rare", filename="rare.csv", content=_imbalanced_csv())
    assert task.metric == "balanced_accuracy"
    model, version = _majority_model(task)
    assert version.score == pytest.approx(0.5) and version.metric == "balanced_accuracy"
    fired = [name for name, _, _ in triggered_strategies(model)]
    assert "training" in fired


def test_the_same_model_judged_by_accuracy_looks_fine_and_nothing_fires():
    task = task_create_from_upload(name="rare-acc", filename="rare.csv", content=_imbalanced_csv(),
                                   metric="accuracy")
    model, version = _majority_model(task)
    assert version.score > 0.85 and version.metric == "accuracy"
    fired = [name for name, _, _ in triggered_strategies(model)]
    assert "training" not in fired and "architecture" not in fired


# ------------------------------------------------------------------------------ live latency


def _live_sample(version, *, p95: float, requests: int, age_s: float = 0.0):
    from datetime import timedelta

    from django.utils import timezone

    from models_registry.choices import Implementation, SampleSource
    from models_registry.models import PerformanceSample

    sample = PerformanceSample.objects.create(
        task=version.model.task, version=version, implementation=Implementation.NEURAL, source=SampleSource.LIVE,
        latency_p50_ms=p95 / 2, latency_p95_ms=p95, n_requests=requests)
    if age_s:
        PerformanceSample.objects.filter(pk=sample.pk).update(created_at=timezone.now() - timedelta(seconds=age_s))
    return sample


def _fired(model) -> dict[str, str]:
    return {name: reason for name, reason, _urgency in triggered_strategies(model)}


def test_the_optimization_trigger_reads_the_live_p95_of_serving():
    from models_registry.selectors import LIVE_LATENCY_WINDOW_S
    from tests.factories import csv_task, version_with_score

    task = csv_task(n=120, seed=2)  # latency budget 200 ms
    model = model_create(task=task, name="live")
    version = version_with_score(model, 0.95, latency_ms=1.0)  # fast when evaluated
    assert "optimization" not in _fired(model)
    # Too few live requests, or too old: the evaluation's p95 still decides.
    _live_sample(version, p95=900.0, requests=10)
    _live_sample(version, p95=900.0, requests=500, age_s=LIVE_LATENCY_WINDOW_S + 60)
    assert "optimization" not in _fired(model)
    # Serving saw it slow (two processes' windows, weighted by their requests): the trigger fires.
    _live_sample(version, p95=300.0, requests=60)
    _live_sample(version, p95=600.0, requests=30)
    reason = _fired(model)["optimization"]
    assert "(live)" in reason and "> 200 ms" in reason
    expected = (900.0 * 10 + 300.0 * 60 + 600.0 * 30) / 100
    assert f"{expected:.2f} ms" in reason


# ------------------------------------------------------------------------------ live feedback


def _reports(version, *, right: int, wrong: int, start: int = 0) -> None:
    """Reported truths for answers of ``version``: class 1 predicted each time, ``right`` of them were class 1."""
    now = timezone.now()
    Feedback.objects.bulk_create([
        Feedback(task=version.model.task, implementation="neural", version=version, prediction=f"{start + i:032x}",
                 row=0, predicted=1, truth=1 if i < right else 2, correct=i < right, predicted_at=now)
        for i in range(right + wrong)
    ])


def test_a_live_score_below_the_threshold_triggers_training_with_the_evidence():
    model = model_create(task=csv_task(), name="m")
    version = version_with_score(model, 0.95)
    assert "training" not in [name for name, _, _ in triggered_strategies(model)]
    _reports(version, right=5, wrong=20)  # 25 reports: fewer than the 30 a decision needs
    assert "training" not in [name for name, _, _ in triggered_strategies(model)]
    _reports(version, right=15, wrong=0, start=100)  # 20 of 40 right: 0.5 [0.352, 0.648]
    low, high = wilson_interval(20, 40)
    assert (low, high) == pytest.approx((0.352, 0.648), abs=1e-3)
    reasons = {name: reason for name, reason, _ in triggered_strategies(model)}
    assert reasons["training"] == (f"live score 0.5000 [{low:.4f}, {high:.4f}] over 40 feedback reports < 0.75 "
                                   f"(gate score 0.9500)")
    [proposal] = [p for p in proposals_collect(ImprovementConfig.load(), {}) if p.strategy == "training"]
    assert proposal.kind == "trigger" and proposal.reason == reasons["training"]  # the run's trigger reason
    assert proposal.metrics is not None and (proposal.metrics.live_score, proposal.metrics.live_reports) == (0.5, 40)


def test_a_live_score_whose_interval_reaches_the_threshold_triggers_nothing():
    model = model_create(task=csv_task(), name="m")
    version = version_with_score(model, 0.95)
    _reports(version, right=26, wrong=14)  # 0.65, but its interval [0.495, 0.779] reaches 0.75
    assert "training" not in [name for name, _, _ in triggered_strategies(model)]
