"""Runs and database outages: a short one is waited out, a long one leaves the run to the reconciler.

The real thing (PostgreSQL stopped under a training worker) is in tests/distributed; these pin
the behaviour of ``RunReporter``, ``run_execute`` and ``runs_reconcile`` one step at a time.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.db import OperationalError
from django.db.models.query import QuerySet
from django.utils import timezone

from improvement.choices import RunStatus
from improvement.models import ImprovementRun, SearchCandidate
from improvement.runs import execution as engine
from improvement.runs import lifecycle as runs
from improvement.runs.lifecycle import RunReporter, run_claim, run_create, runs_reconcile
from models_registry.services import model_create
from models_registry.weights import blob_save
from tests.factories import csv_task, trained_version

pytestmark = pytest.mark.django_db

WEAK = {"kind": "mlp", "input_shape": [4], "output_dim": 3, "hidden": [2], "activation": "tanh",
        "dropout": 0.0, "norm": "none"}


@pytest.fixture
def running_run() -> ImprovementRun:
    model = model_create(task=csv_task(n=120), name="weak")
    trained_version(model, genome=WEAK, epochs=1)
    run = run_create(model=model, strategy="training", enqueue=False)
    assert run_claim(run_id=run.pk, worker="host:1") == "claimed"
    return ImprovementRun.objects.select_related("model__task").get(pk=run.pk)


def _database_down(monkeypatch) -> None:
    def refuse(self, **kwargs):
        raise OperationalError("connection to server failed: Connection refused")

    monkeypatch.setattr(QuerySet, "update", refuse)


def test_a_report_during_a_short_outage_is_kept_for_the_next_one(running_run, monkeypatch):
    reporter = RunReporter(running_run)
    reporter.log("first line")
    with monkeypatch.context() as patch:
        _database_down(patch)
        reporter.flush(0.3, "epoch 3")  # no exception: training goes on
    reporter.flush(0.4, "epoch 4")
    running_run.refresh_from_db()
    assert running_run.progress == 0.4 and "first line" in running_run.log


def test_an_outage_longer_than_the_grace_stops_the_run(running_run, monkeypatch):
    reporter = RunReporter(running_run)
    monkeypatch.setattr(runs, "DB_OUTAGE_GRACE_S", 0.05)
    _database_down(monkeypatch)
    reporter.flush(0.3, "first miss starts the clock")
    time.sleep(0.1)
    with pytest.raises(OperationalError):
        reporter.flush(0.4, "past the grace")


def test_a_run_the_database_vanished_under_is_left_to_the_reconciler(running_run, monkeypatch, settings):
    run = run_create(model=running_run.model, strategy="training", enqueue=False)

    def lost(run, reporter):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(engine, "_run_body", lost)
    assert engine.run_execute(run_id=run.pk, worker="host:2") == engine.INTERRUPTED
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.error == "", "not marked failed: it was not the run's fault"

    ImprovementRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=600))
    assert any("requeued" in line for line in runs_reconcile(timeout_s=60))
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED


def test_reconciling_a_dead_search_as_failed_removes_its_candidate_files(running_run,
                                                                        django_capture_on_commit_callbacks):
    name, sha = blob_save(b"weights", folder=f"search/run-{running_run.pk}", suffix=".safetensors")
    SearchCandidate.objects.create(run=running_run, generation=0, index=0, genome=WEAK, weights_file=name,
                                   weights_sha256=sha, status=SearchCandidate.Status.DONE)
    ImprovementRun.objects.filter(pk=running_run.pk).update(
        attempts=2, heartbeat_at=timezone.now() - timedelta(seconds=600))
    with django_capture_on_commit_callbacks(execute=True):
        lines = runs_reconcile(timeout_s=60, max_attempts=2)
    assert any("failed" in line for line in lines)
    assert not default_storage.exists(name)


def test_a_requeued_search_starts_again_from_scratch(running_run):
    """A search whose worker vanished left candidates behind; the retry must not trip over them."""
    run_execute = engine.run_execute
    run = run_create(model=running_run.model, strategy="architecture", enqueue=False,
                     params={"time_budget_s": 6, "epochs": 20, "population_size": 2, "generations": 1,
                             "prescreen": False})
    name, sha = blob_save(b"weights", folder=f"search/run-{run.pk}", suffix=".safetensors")
    SearchCandidate.objects.create(run=run, generation=0, index=0, genome=WEAK, weights_file=name,
                                   weights_sha256=sha, status=SearchCandidate.Status.RUNNING, worker="gone:1")
    ImprovementRun.objects.filter(pk=run.pk).update(attempts=1)  # as the reconciler leaves a requeued run

    status = run_execute(run_id=run.pk, worker="host:3")
    run.refresh_from_db()
    assert status in (RunStatus.PROMOTED, RunStatus.REJECTED), run.error
    assert run.attempts == 2 and run.search_candidates.count() == 2
    assert not run.search_candidates.filter(worker="gone:1").exists()
    assert not default_storage.exists(name)
