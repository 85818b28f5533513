"""Shadow checks: live neural outputs compared with the algorithm, off the request path."""

from __future__ import annotations

import numpy as np
import pytest

from events.models import OutboxEvent
from hormones.models import Hormone, HormoneEvent
from models_registry.choices import SampleSource
from models_registry.evaluation import algorithm_evaluate
from models_registry.implementations import task_dataset
from models_registry.models import PerformanceSample
from models_registry.nn.evaluation import EvaluationResult
from models_registry.nn.genome import build_module
from models_registry.services import model_create, version_create
from models_registry.serving.choices import SwitchReason
from models_registry.serving.models import ServingState, ServingSwitch
from models_registry.serving.router import serving_router
from models_registry.serving.shadow import agreement_score, serving_shadow, shadow_drifted
from models_registry.serving.switching import ALGORITHMIC, NEURAL, serving_switch
from models_registry.serving.tracker import serving_tracker
from tests.factories import MLP, trained_version
from tests.models_registry.serving.helpers import sample

transactional = pytest.mark.django_db(transaction=True)  # shadow workers use their own connections


def _serve_neural(task, version, *, fraction: float) -> None:
    serving_switch(task=task, implementation=NEURAL, version=version, reason=SwitchReason.NEURAL_BETTER)
    ServingState.objects.filter(task=task).update(shadow_fraction=fraction)
    serving_router().invalidate()


def _predict_gate_rows(client, task, *, batches: int, size: int) -> list[dict]:
    X_test, _ = task_dataset(task).gate
    answers = []
    for i in range(batches):
        rows = X_test[(i * size) % len(X_test):][:size]
        answer = client.post(f"/api/tasks/{task.slug}/predict", {"inputs": rows.tolist()}, format="json")
        assert answer.status_code == 200, answer.content
        answers.append(answer.json())
    return answers


@transactional
def test_shadow_disagreement_switches_back_and_raises_adrenaline(blobs_task, viewer, client_for):
    task = blobs_task
    sample(task, score=0.97, p50=1.0)
    # A version that claims 0.95 on held-out data but answers at random on live traffic: drift.
    model = model_create(task=task, name="drifting")
    module = build_module(MLP, seed=0)
    claimed = EvaluationResult(score=0.95, metric="accuracy", latency={}, n_parameters=None, size_bytes=None,
                               n_rows=task.n_gate)
    version = version_create(model=model, genome=MLP, state_dict=module.state_dict(), evaluation=claimed,
                             activate=True)
    _serve_neural(task, version, fraction=1.0)
    adrenaline_before = Hormone.objects.filter(name="adrenaline").first()

    answers = _predict_gate_rows(client_for(viewer), task, batches=12, size=4)
    assert answers[0]["implementation"] == "neural"  # the request path is never held up
    assert serving_shadow().drain(timeout=60)

    state = ServingState.objects.get(task=task)
    assert (state.implementation, state.reason) == (ALGORITHMIC, SwitchReason.SHADOW_DISAGREEMENT)
    switch = ServingSwitch.objects.filter(task=task, reason=SwitchReason.SHADOW_DISAGREEMENT).get()
    assert switch.from_version_id == version.pk and switch.evidence["agreement"] < switch.evidence["floor"]
    assert switch.evidence["floor"] == pytest.approx(0.95 + 0.97 - 1 - task.score_tolerance)
    event = HormoneEvent.objects.select_related("hormone").get(hormone__name="adrenaline")
    assert event.delta > 0 and task.slug in event.cause
    assert event.level_after > (adrenaline_before.level if adrenaline_before else 0.1)
    drift = OutboxEvent.objects.get(type="serving.drift")
    assert drift.payload["task"] == task.slug and drift.payload["switched"] is True
    assert drift.payload["version_id"] == version.pk

    serving_router().invalidate()
    answer = client_for(viewer).post(f"/api/tasks/{task.slug}/predict", {"inputs": [0.0, 0.0, 0.0, 0.0]},
                                     format="json")
    assert answer.json()["implementation"] == "algorithmic"
    serving_tracker().flush()
    shadow = PerformanceSample.objects.get(source=SampleSource.SHADOW)
    assert shadow.version_id == version.pk and shadow.metric == "agreement" and shadow.score < 0.9


@transactional
def test_an_agreeing_version_is_left_alone(blobs_task, viewer, client_for):
    task = blobs_task
    algorithm_evaluate(task=task, measure=False)
    model = model_create(task=task, name="good")
    version = trained_version(model, seed=0, epochs=30)
    _serve_neural(task, version, fraction=0.5)

    _predict_gate_rows(client_for(viewer), task, batches=40, size=4)
    checker = serving_shadow()
    assert checker.drain(timeout=60)
    assert 8 <= checker.submitted <= 32  # about half the requests were sampled
    assert ServingState.objects.get(task=task).implementation == NEURAL
    assert not ServingSwitch.objects.filter(reason=SwitchReason.SHADOW_DISAGREEMENT).exists()
    assert not HormoneEvent.objects.filter(hormone__name="adrenaline").exists()
    serving_tracker().flush()
    shadow = PerformanceSample.objects.get(source=SampleSource.SHADOW)
    assert shadow.n_requests == checker.submitted
    # The sampled window is small, so the measured agreement may dip a little under the floor;
    # what matters is that it is far above chance and not below the floor beyond sampling noise.
    assert shadow.score > 0.6
    assert not shadow_drifted(task.output_kind, shadow.score, shadow.extra["window_rows"], shadow.extra["floor"])


def test_agreement_scores():
    labels = np.array([0, 1, 2, 1])
    assert agreement_score("classes", labels, np.array([0, 1, 2, 2])) == 0.75
    expected = np.random.default_rng(0).normal(size=(64, 3))
    assert agreement_score("values", expected, expected) == 1.0
    assert agreement_score("values", expected + 10.0, expected) == 0.0
    assert 0.9 < agreement_score("reconstruction", expected + 0.1, expected) < 1.0


def test_a_few_disagreements_in_a_small_window_are_not_drift():
    # 29 of 32 agree (0.906) against a floor of 0.92: plausible noise, not drift...
    assert not shadow_drifted("classes", 29 / 32, 32, 0.92)
    # ...but the same rate over 2000 rows is, and so is chance-level agreement over 32.
    assert shadow_drifted("classes", 0.906, 2000, 0.92)
    assert shadow_drifted("classes", 11 / 32, 32, 0.90)
    assert shadow_drifted("values", 0.5, 32, 0.9) and not shadow_drifted("values", 0.95, 32, 0.9)


@transactional
def test_checks_queued_under_load_run_as_one_algorithm_call(blobs_task, monkeypatch):
    """While one check runs, the next ones queue; the worker then runs the algorithm once over all
    their rows, so the shadow's CPU does not grow with the request rate."""
    import threading

    from models_registry.serving import shadow as shadow_module
    from models_registry.serving.shadow import ShadowChecker

    task = blobs_task
    algorithm_evaluate(task=task, measure=False)
    version = trained_version(model_create(task=task, name="good"), seed=0, epochs=30)
    _serve_neural(task, version, fraction=1.0)
    route = serving_router().route(task.slug)
    real = shadow_module.algorithm_predict_fn
    release = threading.Event()
    calls: list[int] = []

    def counted(task_):
        predict = real(task_)

        def run(X):
            calls.append(len(X))
            release.wait(30)  # the first call holds the worker until every request is queued
            return predict(X)
        return run

    monkeypatch.setattr(shadow_module, "algorithm_predict_fn", counted)
    checker = ShadowChecker(queue_size=64, min_rows=1)
    X, _ = task_dataset(task).gate
    for i in range(21):
        rows = X[(i * 4) % (len(X) - 4):][:4]
        assert checker.submit(route, rows, route.predict(rows))
    release.set()
    assert checker.drain(timeout=60)
    checker.stop()
    assert sum(calls) == 21 * 4
    assert len(calls) == 2  # the first request alone, then the twenty that queued behind it
    serving_tracker().flush()
    shadow = PerformanceSample.objects.get(source=SampleSource.SHADOW)
    assert shadow.n_requests == 21 and shadow.extra["rows"] == 84


@transactional
def test_checked_rows_stay_within_the_per_second_budget_whatever_the_fraction(blobs_task, monkeypatch):
    from models_registry.serving import shadow as shadow_module
    from models_registry.serving.shadow import ShadowChecker

    task = blobs_task
    algorithm_evaluate(task=task, measure=False)
    version = trained_version(model_create(task=task, name="good"), seed=0, epochs=3)
    _serve_neural(task, version, fraction=1.0)
    route = serving_router().route(task.slug)
    clock = [1000.0]
    monkeypatch.setattr(shadow_module.time, "monotonic", lambda: clock[0])
    checker = ShadowChecker(queue_size=10_000, min_rows=1, max_rows_per_s=10)
    checker._start_workers = lambda: None  # nothing drains the queue: what was queued is counted below
    X, _ = task_dataset(task).gate
    rows = X[:4]
    accepted = [checker.submit(route, rows, route.predict(rows)) for _ in range(20)]
    assert sum(accepted) == 3 and checker.over_budget == 17  # 4 + 4 rows, then a 2-row subset: 10 in all
    queued = [checker._queue.get_nowait() for _ in range(checker._queue.qsize())]
    assert sum(len(job.X) for job in queued) == 10
    # A batch on a refilled bucket is checked on a random subset of its rows, with their own outputs.
    clock[0] += 5.0
    batch = X[:100]
    assert checker.submit(route, batch, route.predict(batch))
    (job,) = [checker._queue.get_nowait() for _ in range(checker._queue.qsize())]
    assert len(job.X) == 10
    np.testing.assert_array_equal(job.outputs, route.predict(job.X))
