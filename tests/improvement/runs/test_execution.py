"""The engine end to end on a tiny task: promotion, rejection, failures, duplicates, cancel."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.utils import timezone

from improvement.choices import RunStatus
from improvement.models import ImprovementConfig, ImprovementRun
from improvement.runs.execution import run_execute
from improvement.runs.lifecycle import run_cancel, run_create, runs_reconcile
from models_registry.implementations import task_dataset, version_predict_fn
from models_registry.models import ModelVersion
from models_registry.selectors import version_active
from models_registry.services import model_create
from tests.factories import csv_task, trained_version

pytestmark = pytest.mark.django_db

WEAK = {"kind": "mlp", "input_shape": [4], "output_dim": 3, "hidden": [2], "activation": "tanh",
        "dropout": 0.0, "norm": "none"}
FAST = {"time_budget_s": 6, "epochs": 40, "population_size": 3, "generations": 2}


@pytest.fixture
def weak_model():
    task = csv_task(n=300, seed=3)
    model = model_create(task=task, name="weak")
    trained_version(model, genome=WEAK, epochs=1)
    return model


@pytest.fixture(autouse=True)
def _config():
    ImprovementConfig.objects.update_or_create(pk=1, defaults={"run_time_budget_s": 6})


def _run(model, strategy, **params):
    merged = {k: v for k, v in {**FAST, **params}.items() if v is not None}
    run = run_create(model=model, strategy=strategy, params=merged, enqueue=False)
    status = run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == status
    return run


def test_training_promotes_and_keeps_the_old_version_as_backup(weak_model):
    old = version_active(model=weak_model)
    run = _run(weak_model, "training")
    assert run.status == RunStatus.PROMOTED, run.decision or run.error
    weak_model.refresh_from_db()
    new = version_active(model=weak_model)
    assert new.pk == run.result_version_id and new.parent_id == old.pk
    assert new.score > old.score
    assert run.gain >= ImprovementConfig.load().performance_threshold
    assert ModelVersion.objects.filter(pk=old.pk, is_active=False).exists()
    assert default_storage.exists(old.weights_file)
    assert run.cpu_seconds > 0 and run.peak_memory_mb > 0 and run.progress == 1.0
    assert run.baseline_metrics["score"] == pytest.approx(old.score)
    assert run.curve, "per-epoch points are recorded for the live chart"


def test_candidate_below_threshold_is_rejected_and_nothing_changes(weak_model):
    ImprovementConfig.objects.filter(pk=1).update(performance_threshold=10.0)
    old = version_active(model=weak_model)
    X, _ = task_dataset(weak_model.task).gate
    before = version_predict_fn(old)(X)
    run = _run(weak_model, "training")
    assert run.status == RunStatus.REJECTED
    assert "short of the 1000% threshold" in run.decision and "gate rows" in run.decision
    weak_model.refresh_from_db()
    assert version_active(model=weak_model).pk == old.pk
    assert weak_model.versions.count() == 1
    np.testing.assert_array_equal(version_predict_fn(version_active(model=weak_model))(X), before)


def test_non_finite_loss_fails_the_run_without_promotion(weak_model):
    old = version_active(model=weak_model)
    run = _run(weak_model, "training", lr=1e30)
    assert run.status == RunStatus.FAILED
    assert "non-finite" in run.error
    assert weak_model.versions.count() == 1 and version_active(model=weak_model).pk == old.pk


def test_second_delivery_of_the_same_run_does_nothing(weak_model):
    run = _run(weak_model, "training")
    versions = weak_model.versions.count()
    assert run_execute(run_id=run.pk) == "skipped"
    run.refresh_from_db()
    assert run.attempts == 1
    assert weak_model.versions.count() == versions


def test_architecture_search_produces_a_decision(weak_model):
    run = _run(weak_model, "architecture")
    assert run.status in (RunStatus.PROMOTED, RunStatus.REJECTED), run.error
    trials = run.search_candidates.count()
    assert 1 <= trials <= FAST["population_size"] * FAST["generations"]  # the time budget may stop it early
    assert run.search_candidates.filter(trial_number__isnull=False).count() == trials
    assert not run.search_candidates.exclude(weights_file="").exists(), "candidate files are cleaned up"
    # Its candidate is compiled to its fastest runtime before it is judged, as training's is, so an
    # architecture promotion does not drop an optimized runtime back to torch fp32.
    assert "the fastest within the score tolerance on validation" in run.log, run.log
    if run.status == RunStatus.PROMOTED:
        assert f"runtime {version_active(model=weak_model).runtime} for" in run.log


def test_distillation_from_a_stronger_model_promotes(weak_model):
    strong = model_create(task=weak_model.task, name="strong")
    trained_version(strong, genome={**WEAK, "hidden": [32]}, epochs=30)
    run = _run(weak_model, "distillation")
    assert "strong" in run.log or "algorithm" in run.log or run.status == RunStatus.PROMOTED
    assert run.status == RunStatus.PROMOTED, run.decision or run.error


def test_optimization_respects_the_score_tolerance(weak_model):
    ImprovementConfig.objects.filter(pk=1).update(performance_threshold=0.0)
    run = _run(weak_model, "optimization")
    assert run.status in (RunStatus.PROMOTED, RunStatus.REJECTED), run.error
    tolerance = ImprovementConfig.load().optimization_score_tolerance
    if run.status == RunStatus.PROMOTED:
        assert run.candidate_metrics["score"] >= run.baseline_metrics["score"] - tolerance


def test_cancel_before_start(weak_model):
    run = run_create(model=weak_model, strategy="training", enqueue=False)
    run_cancel(run=run)
    assert run.status == RunStatus.CANCELLED
    assert run_execute(run_id=run.pk) == "skipped"


def test_reconciler_requeues_then_fails_a_run_whose_worker_vanished(weak_model):
    run = run_create(model=weak_model, strategy="training", enqueue=False)
    stale = timezone.now() - timedelta(minutes=30)
    ImprovementRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, heartbeat_at=stale, attempts=1,
                                                    worker="gone:1")
    lines = runs_reconcile(timeout_s=60, max_attempts=2)
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and "requeued" in lines[0]
    ImprovementRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, heartbeat_at=stale, attempts=2)
    runs_reconcile(timeout_s=60, max_attempts=2)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "no heartbeat" in run.error


def test_a_delivery_executes_the_most_urgent_queued_run(weak_model):
    from improvement.runs.lifecycle import run_pick

    low = run_create(model=weak_model, strategy="training", priority=0.1, enqueue=False)
    high = run_create(model=weak_model, strategy="training", priority=0.9, enqueue=False)
    assert run_pick(preferred=low.pk) == high.pk
    assert run_pick(preferred=high.pk) == high.pk
    ImprovementRun.objects.filter(pk=high.pk).update(status=RunStatus.CANCELLED)
    assert run_pick(preferred=low.pk) == low.pk


def test_with_backups_off_a_promotion_succeeds_and_drops_the_previous_version(
        weak_model, django_capture_on_commit_callbacks):
    ImprovementConfig.objects.filter(pk=1).update(model_backup_enabled=False)
    old = version_active(model=weak_model)
    with django_capture_on_commit_callbacks(execute=True):
        run = _run(weak_model, "training")
    assert run.status == RunStatus.PROMOTED, run.decision or run.error
    assert not ModelVersion.objects.filter(pk=old.pk).exists(), "the previous version was kept as a backup"
    new = version_active(model=weak_model)
    assert new.pk == run.result_version_id and weak_model.versions.count() == 1
    assert default_storage.exists(new.weights_file)
    assert not default_storage.exists(old.weights_file)


def test_a_finished_run_enqueues_the_slot_filling_cycle_instead_of_running_it(
        weak_model, monkeypatch, django_capture_on_commit_callbacks):
    """The worker's run never calls up into the scheduler: it queues the follow-up cycle on commit."""
    from improvement.runs import execution

    queued = []
    monkeypatch.setattr(execution, "async_task", lambda func, *args, **kwargs: queued.append(func))
    monkeypatch.setattr("improvement.scheduler.cycle.cycle_run",
                        lambda **kwargs: pytest.fail("the run's worker ran a cycle itself"))
    with django_capture_on_commit_callbacks(execute=True):
        run = _run(weak_model, "training")
    assert run.status in (RunStatus.PROMOTED, RunStatus.REJECTED)
    assert queued == [execution.SLOT_FREED_TASK]


def test_a_models_search_continues_across_runs(weak_model):
    """The model's Optuna study persists: a later search asks where the earlier one stopped."""
    from improvement.runs.search import optuna_storage_url, study_for

    first = _run(weak_model, "architecture", trials=3, population_size=None, generations=None)
    second = _run(weak_model, "architecture", trials=3, population_size=None, generations=None)
    first_trials = sorted(first.search_candidates.values_list("trial_number", flat=True))
    second_trials = sorted(second.search_candidates.values_list("trial_number", flat=True))
    assert first_trials and second_trials and min(second_trials) > max(first_trials)
    study = study_for(second, ("score",))
    finished = {t.number for t in study.trials if t.state.is_finished()}
    assert set(first_trials) | set(second_trials) <= finished
    assert optuna_storage_url().startswith("sqlite:///")
    assert second.params["study"] == study.study_name == first.params["study"]


def test_a_promoted_training_candidate_runs_on_its_fastest_runtime_within_tolerance(weak_model):
    """An optimization sticks: the score strategies' candidates are compiled before they are judged."""
    run = _run(weak_model, "training")
    assert run.status == RunStatus.PROMOTED, run.decision or run.error
    new = version_active(model=weak_model)
    assert new.pk == run.result_version_id
    # A small MLP answers several times faster on ONNX Runtime than on torch eager (bench: runtimes).
    assert new.runtime != "torch_fp32", run.log
    assert f"runtime {new.runtime} for" in run.log
    X_gate, y_gate = task_dataset(weak_model.task).gate
    outputs = np.asarray(version_predict_fn(new)(X_gate))
    assert outputs.shape[0] == len(y_gate)
    assert float(np.mean(outputs.argmax(axis=1) == y_gate)) == pytest.approx(new.score, abs=1e-6)
