"""Hormone releases computed by the hormone-response task: neural when serving says so, else the algorithm."""

from __future__ import annotations

import numpy as np
import pytest

from hormones.models import HormoneEvent
from hormones.services import hormones_ensure
from improvement.choices import RunStatus
from improvement.models import ImprovementConfig, ImprovementRun
from improvement.neural_hormones import hormone_response, stress_release, stress_response
from improvement.releases import run_finished_signals
from models_registry.data.builtin import BUILTIN_DATASETS
from models_registry.data.hormone_model import simulate_hormone_response
from models_registry.services import model_create, task_create_builtin
from models_registry.serving.choices import SwitchReason
from models_registry.serving.router import serving_router_reset
from models_registry.serving.switching import serving_switch
from tests.factories import csv_task

pytestmark = pytest.mark.django_db

LINEAR_GENOME = BUILTIN_DATASETS["hormone-response"].genome() | {"hidden": []}


def _surrogate(model, *, amplitude_weight: float, duration_weight: float):
    """A linear "surrogate" whose peak cortisol is amplitude_weight·amplitude + duration_weight·duration."""
    import torch

    from models_registry.nn.evaluation import EvaluationResult
    from models_registry.nn.genome import build_module
    from models_registry.services import version_create

    module = build_module(LINEAR_GENOME)
    with torch.no_grad():
        module.out.weight.zero_()
        module.out.bias.zero_()
        module.out.weight[0, 0], module.out.weight[0, 2] = amplitude_weight, duration_weight
    evaluation = EvaluationResult(score=0.99, metric="r2", latency={"p50_ms_b1": 0.05, "p95_ms_b1": 0.1},
                                  n_parameters=45, size_bytes=200, n_rows=10)
    return version_create(model=model, genome=LINEAR_GENOME, state_dict=module.state_dict(),
                          evaluation=evaluation, activate=True)


@pytest.fixture(autouse=True)
def _setup(settings):
    settings.PLASTICITY_SERVING_BACKGROUND = False
    settings.PLASTICITY_SERVING_REFRESH_S = 0.0
    hormones_ensure()
    ImprovementConfig.objects.update_or_create(pk=1, defaults={"neural_hormones": True})
    serving_router_reset()
    yield
    serving_router_reset()


@pytest.fixture
def hormone_task():
    return task_create_builtin(key="hormone-response")


@pytest.fixture
def neural_served(hormone_task):
    """The hormone-response task served by a neural version (an operator's switch)."""
    model = model_create(task=hormone_task, name="surrogate")
    version = _surrogate(model, amplitude_weight=1.0, duration_weight=0.5)
    serving_switch(task=hormone_task, implementation="neural", version=version, reason=SwitchReason.OPERATOR)
    serving_router_reset()
    return version


def _last_cortisol() -> HormoneEvent:
    return HormoneEvent.objects.filter(hormone__name="cortisol").order_by("-id").first()


def test_neural_implementation_computes_the_release_when_serving_serves_it(neural_served):
    X = np.array([[2.0, 12.0, 1.0, 1.0, 1.0, 4.0, 0.7, 0.0]], dtype=np.float32)
    computation = hormone_response(X)
    assert computation.implementation == "neural" and computation.version_id == neural_served.pk
    assert computation.computed_by == "neural surrogate v1"
    assert computation.outputs[0, 0] == pytest.approx(2.0 + 1.0 / 2)  # the surrogate's answer, not the simulator's
    event = stress_release(event="run_failed", severity=0.6, persistence=0.5, cause="test: failed run")
    model = event.context["hormone_model"]
    assert model["implementation"] == "neural" and model["computed_by"] == "neural surrogate v1"
    assert model["stimulus"]["stress_amplitude"] == pytest.approx(2.5)
    # The surrogate's own numbers: peak = amplitude + duration/2, normalised between the mildest and severest.
    peak, low, high = 2.5 + 2.125 / 2, 0.25 + 0.25 / 2, 4.0 + 4.0 / 2
    assert model["response"] == pytest.approx((peak - low) / (high - low), abs=1e-4)
    assert event.delta == pytest.approx(0.25 * model["response"], abs=1e-4)


def test_a_surrogate_that_cannot_tell_stressors_apart_is_not_trusted(hormone_task):
    model = model_create(task=hormone_task, name="flat")
    version = _surrogate(model, amplitude_weight=0.0, duration_weight=0.0)
    serving_switch(task=hormone_task, implementation="neural", version=version, reason=SwitchReason.OPERATOR)
    serving_router_reset()
    response, computation, _ = stress_response(severity=0.6, persistence=0.5)
    assert computation.implementation == "algorithmic" and "response range is empty" in computation.computed_by
    assert response == pytest.approx(stress_response(severity=0.6, persistence=0.5, neural=False)[0])


def test_algorithm_computes_the_release_when_serving_serves_the_algorithm(hormone_task):
    X = np.array([[2.0, 12.0, 1.0, 1.0, 1.0, 4.0, 0.7, 0.0]], dtype=np.float32)
    computation = hormone_response(X)
    assert computation.implementation == "algorithmic" and computation.computed_by == "algorithm (serving)"
    np.testing.assert_allclose(computation.outputs, simulate_hormone_response(X), rtol=1e-6)
    event = stress_release(event="run_failed", severity=0.6, persistence=0.5, cause="test")
    assert event.context["hormone_model"]["computed_by"] == "algorithm (serving)"


def test_switch_off_uses_the_algorithm_even_when_neural_serves(neural_served):
    ImprovementConfig.objects.filter(pk=1).update(neural_hormones=False)
    event = stress_release(event="latency_over_budget", severity=0.5, persistence=0.5, cause="test")
    assert event.context["hormone_model"]["computed_by"] == "algorithm (neural_hormones is off)"
    assert event.context["hormone_model"]["implementation"] == "algorithmic"


def test_any_serving_error_falls_back_to_the_algorithm(neural_served, monkeypatch):
    from models_registry.serving import router

    def broken(self, X):
        raise RuntimeError("weights unreadable")

    monkeypatch.setattr(router.Route, "predict", broken)
    event = stress_release(event="run_failed", severity=0.6, persistence=0.5, cause="test")
    model = event.context["hormone_model"]
    assert model["implementation"] == "algorithmic"
    assert model["fallback"] == "fallback: RuntimeError: weights unreadable"
    expected, _, _ = stress_response(severity=0.6, persistence=0.5, neural=False)
    assert model["response"] == pytest.approx(expected, abs=1e-4)


def test_a_missing_task_falls_back_to_the_algorithm_without_a_traceback(caplog):
    """The hormone-response task is optional: without it the algorithm computes the release, and
    the log stays quiet (every cycle used to log a TaskNotFound traceback)."""
    import logging

    with caplog.at_level(logging.WARNING):
        computation = hormone_response(np.zeros((2, 8), dtype=np.float32) + 1.0)
    assert computation.implementation == "algorithmic" and "no hormone-response task" in computation.computed_by
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_more_severe_event_releases_more_cortisol():
    responses = [stress_response(severity=s, persistence=0.5, neural=False)[0] for s in (0.0, 0.3, 0.6, 1.0)]
    assert responses == sorted(responses) and responses[0] < 0.2 < responses[-1] <= 1.0
    longer = [stress_response(severity=0.6, persistence=d, neural=False)[0] for d in (0.0, 0.5)]
    assert longer[0] < longer[1]


def test_a_failed_run_releases_cortisol_sized_by_the_hormone_model(neural_served):
    model = model_create(task=csv_task(), name="m")
    run = ImprovementRun.objects.create(model=model, strategy="training", status=RunStatus.FAILED)
    run_finished_signals(run_id=run.pk, status=RunStatus.FAILED, wall_s=60.0)
    event = _last_cortisol()
    assert event.cause == f"run #{run.pk} (training) failed" and event.context["run_id"] == run.pk
    assert event.context["hormone_model"]["computed_by"] == "neural surrogate v1"
    assert event.context["hormone_model"]["persistence"] == pytest.approx(60.0 / 240.0)
