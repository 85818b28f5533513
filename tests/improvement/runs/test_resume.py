"""A run whose worker died resumes from what it had built: the training phases' best weights, the
search's finished trials. The worker's death is an exception the attempt cannot catch (nothing of
the attempt runs after it, as after SIGKILL); the reconciler then requeues the run from its stale
heartbeat and an ordinary ``run_execute`` (or a second runner) takes it over."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone

from improvement.choices import RunStatus
from improvement.models import ImprovementConfig, ImprovementRun, SearchCandidate
from improvement.runs.checkpoints import RunCheckpoints, checkpoints_delete
from improvement.runs.context import context_build
from improvement.runs.execution import run_execute
from improvement.runs.lifecycle import RunReporter, run_claim, run_create, runs_reconcile
from improvement.runs.search import SharedTrialRunner
from improvement.strategies.architecture import search_space, trial_trainer
from improvement.strategies.registry import get_strategy
from models_registry.selectors import version_active
from models_registry.services import model_create
from tests.factories import csv_task, trained_version

pytestmark = pytest.mark.django_db

WEAK = {"kind": "mlp", "input_shape": [4], "output_dim": 3, "hidden": [2], "activation": "tanh",
        "dropout": 0.0, "norm": "none"}


class WorkerDied(BaseException):
    """Stands for SIGKILL: raised inside an attempt, caught by none of its handlers."""


@pytest.fixture
def weak_model():
    ImprovementConfig.objects.update_or_create(pk=1, defaults={"run_time_budget_s": 10})
    model = model_create(task=csv_task(n=300, seed=3), name="weak")
    trained_version(model, genome=WEAK, epochs=1)
    return model


def _first_attempt(run: ImprovementRun, worker: str) -> ImprovementRun:
    assert run_claim(run_id=run.pk, worker=worker) == "claimed"
    run.refresh_from_db()
    return run


def _worker_vanishes(run: ImprovementRun) -> None:
    """The dead worker's heartbeat goes stale; the reconciler requeues the run."""
    ImprovementRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    lines = runs_reconcile(timeout_s=20)
    assert any(f"run #{run.pk} requeued" in line for line in lines), lines
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED


def test_checkpoints_are_kept_only_by_the_worker_holding_the_run_and_removed_at_the_end(weak_model):
    run = _first_attempt(run_create(model=weak_model, strategy="training", enqueue=False), "host:1")
    state = {"w": __import__("torch").arange(6.0).reshape(2, 3)}
    mine = RunCheckpoints(run.pk, "host:1", every_s=3600)
    mine.save("phase", state, {"val_score": 0.5})
    mine.save("phase", {"w": state["w"] * 2}, {"val_score": 0.6})  # throttled: within every_s
    loaded, meta = mine.load("phase")
    assert meta == {"val_score": 0.5, "final": False} and loaded["w"].equal(state["w"])
    mine.save("phase", {"w": state["w"] * 3}, {"val_score": 0.7}, final=True)  # a final save is never held back
    loaded, meta = mine.load("phase")
    assert meta["final"] and loaded["w"].equal(state["w"] * 3)
    (name,) = [entry["file"] for entry in ImprovementRun.objects.get(pk=run.pk).checkpoint.values()]
    assert default_storage.exists(name)

    RunCheckpoints(run.pk, "host:2").save("phase", state, {"val_score": 0.9}, final=True)  # not its run
    assert mine.load("phase")[1]["val_score"] == 0.7

    assert checkpoints_delete(run_id=run.pk) == 1
    assert not default_storage.exists(name) and mine.load("phase") is None


def test_a_training_run_resumes_from_its_checkpoints_instead_of_from_zero(weak_model):
    run = run_create(model=weak_model, strategy="training", enqueue=False,
                     params={"time_budget_s": 8, "epochs": 100_000, "patience": 100_000})
    run = _first_attempt(run, "host:1")
    context = context_build(run, version_active(model=weak_model), ImprovementConfig.load())
    context.checkpoints = RunCheckpoints(run.pk, run.worker, every_s=0.0)

    def progress(fraction, message, point):
        # Dies once the second phase has saved a checkpoint (the first phase has finished by then).
        index = ImprovementRun.objects.get(pk=run.pk).checkpoint
        if any(key.startswith("training-1-") for key in index):
            raise WorkerDied

    with pytest.raises(WorkerDied):
        get_strategy("training").build_candidates(context, progress)
    index = ImprovementRun.objects.get(pk=run.pk).checkpoint
    (first,) = [key for key in index if key.startswith("training-0-")]
    (second,) = [key for key in index if key.startswith("training-1-")]
    assert index[first]["meta"]["final"] and not index[second]["meta"]["final"]
    files = {entry["file"] for entry in index.values()}

    _worker_vanishes(run)
    assert run.checkpoint == index, "a requeued run keeps its checkpoints"
    status = run_execute(run_id=run.pk)
    run.refresh_from_db()

    assert status in (RunStatus.PROMOTED, RunStatus.REJECTED), run.error
    assert run.attempts == 2
    first_kind, second_kind = first.split("-", 2)[2], second.split("-", 2)[2]
    assert f"{first_kind}: finished by an earlier attempt" in run.log, run.log
    assert f"{second_kind}: resuming from its checkpoint (epoch {index[second]['meta']['epoch']}" in run.log, run.log
    # The finished phase was not trained again: the second attempt's curve has only the second phase.
    phases = {point.get("phase") for point in run.curve if "epoch" in point}
    assert phases == {second_kind}, phases
    assert run.checkpoint == {} and not any(default_storage.exists(name) for name in files)


def test_an_architecture_search_resumes_with_the_trials_it_finished(weak_model):
    n_trials = 4
    run = run_create(model=weak_model, strategy="architecture", enqueue=False,
                     params={"trials": n_trials, "parallel": 1, "time_budget_s": 30})

    def attempt(worker: str, trained: list[int], die_after: int | None):
        claimed = _first_attempt(run, worker)
        context = context_build(claimed, version_active(model=weak_model), ImprovementConfig.load())
        real = trial_trainer(context, n_trials)

        def train(spec, index):
            trained.append(index)
            return real(spec, index)

        def progress(done, total, result):
            if die_after is not None and done >= die_after:
                raise WorkerDied

        runner = SharedTrialRunner(claimed, context, RunReporter(claimed))
        return runner, runner.run(search_space(context), n_trials=n_trials, deadline=time.monotonic() + 600,
                                  train=train, progress=progress)

    first: list[int] = []
    with pytest.raises(WorkerDied):
        attempt("host:1", first, die_after=2)
    finished = {row.index: row.score for row in SearchCandidate.objects.filter(run=run, status="done")}
    assert len(finished) == 2 and sorted(first) == sorted(finished)

    _worker_vanishes(run)
    second: list[int] = []
    runner, results = attempt("host:2", second, die_after=None)

    assert len(results) == n_trials
    assert len(second) == n_trials - 2 and not set(second) & set(finished), "finished trials are not trained again"
    kept = results[:2]
    assert [r.val_score for r in kept] == [finished[i] for i in sorted(finished)]
    assert all(r.get_module() is not None for r in kept), "a kept trial's weights load"
    runner.reporter.flush(0.5, "checking the log")
    run.refresh_from_db()
    assert "search resumed: 2 trial(s) finished by an earlier attempt are kept" in run.log
