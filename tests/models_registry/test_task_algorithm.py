"""A task's algorithm evaluation left to a worker: claimed once, retried when its worker dies, never fatal."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import OrmQ

from improvement.scheduler.loop import loop_tick
from improvement.services import ALGORITHM_TASK
from models_registry.models import PerformanceSample, Task
from models_registry.selectors import algorithm_latest_sample
from models_registry.services import model_create, task_create_from_upload
from models_registry.serving.models import ServingState
from models_registry.task_algorithm import (
    MAX_ATTEMPTS,
    evaluation_lease_s,
    task_algorithm_claim,
    task_algorithm_ensure,
    task_algorithm_execute,
    task_algorithms_reconcile,
)
from tests.factories import blobs_csv, trained_version
from tests.jobs import run_queued_evaluations

pytestmark = pytest.mark.django_db


def _deferred(name: str = "later", **fields) -> Task:
    """A task as an upload through the API creates it: its evaluation pending, for a worker."""
    return task_create_from_upload(name=name, filename=f"{name}.csv", content=blobs_csv(n=240),
                                   evaluate_algorithm=False, **fields)


def _samples(task: Task) -> int:
    return PerformanceSample.objects.filter(task=task, version=None).count()


def _lease_runs_out(task: Task) -> None:
    """What the passing of time does to a claim whose worker died: it gets older than the lease."""
    old = timezone.now() - timedelta(seconds=evaluation_lease_s() + 1)
    Task.objects.filter(pk=task.pk).update(algorithm_evaluation_at=old)


def test_a_deferred_evaluation_leaves_the_task_pending_and_unmeasured():
    task = _deferred()
    assert task.algorithm_evaluation == "pending" and task.algorithm_evaluation_attempts == 0
    assert _samples(task) == 0 and not OrmQ.objects.exists()  # queueing is the caller's (improvement) part


def test_only_one_of_two_deliveries_claims_the_evaluation():
    task = _deferred()
    assert task_algorithm_claim(task_id=task.pk).algorithm_evaluation == "running"
    assert task_algorithm_claim(task_id=task.pk) is None
    assert task_algorithm_execute(task_id=task.pk).startswith(f"task #{task.pk}: no pending")
    assert _samples(task) == 0  # the holder evaluates, no one else


def test_a_worker_that_dies_mid_evaluation_is_replaced_at_the_next_tick(django_capture_on_commit_callbacks):
    task = _deferred()
    assert task_algorithm_claim(task_id=task.pk) is not None  # this worker dies before it records anything
    with django_capture_on_commit_callbacks(execute=True):
        assert not any("algorithm" in line for line in loop_tick()["reconciled"])  # its claim is still young
    assert not OrmQ.objects.exists()

    _lease_runs_out(task)
    with django_capture_on_commit_callbacks(execute=True):
        reconciled = loop_tick()["reconciled"]
    assert f"task #{task.pk}: algorithm evaluation requeued (unfinished after the queue's timeout)" in reconciled
    assert Task.objects.get(pk=task.pk).algorithm_evaluation == "pending"
    assert [(row.func(), row.task["args"]) for row in OrmQ.objects.all()] == [(ALGORITHM_TASK, (task.pk,))]

    (done,) = run_queued_evaluations()
    assert "gate" in done, done
    task.refresh_from_db()
    assert (task.algorithm_evaluation, task.algorithm_evaluation_attempts) == ("done", 2)
    assert algorithm_latest_sample(task=task) is not None and _samples(task) == 2
    assert task_algorithms_reconcile(lease_s=0) == []  # done: nothing to retry


def test_a_queue_message_lost_before_any_claim_is_sent_again_without_counting_an_attempt():
    task = _deferred()
    _lease_runs_out(task)
    assert task_algorithms_reconcile() == [task.pk]
    assert task_algorithms_reconcile() == []  # requeued just now: its lease starts again
    task.refresh_from_db()
    assert (task.algorithm_evaluation, task.algorithm_evaluation_attempts) == ("pending", 0)


def test_an_evaluation_whose_worker_keeps_dying_ends_failed_with_a_warning():
    task = _deferred()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert task_algorithm_claim(task_id=task.pk) is not None, attempt  # and its worker dies
        _lease_runs_out(task)
        requeued = task_algorithms_reconcile()
        assert requeued == ([task.pk] if attempt < MAX_ATTEMPTS else []), attempt
    task.refresh_from_db()
    assert task.algorithm_evaluation == "failed" and task.algorithm_evaluation_attempts == MAX_ATTEMPTS
    (warning,) = [warning for warning in task.warnings if warning.startswith("algorithm:")]
    assert warning.startswith(f"algorithm: {task.algorithm_path} could not be evaluated: its worker stopped "
                              f"{MAX_ATTEMPTS} times")
    assert task_algorithm_claim(task_id=task.pk) is None


def test_the_first_version_waits_for_no_worker_but_has_the_algorithm_measured_first():
    task = _deferred()
    assert task_algorithm_claim(task_id=task.pk) is not None  # another worker is evaluating it
    said = task_algorithm_ensure(task=task)
    assert "beside the worker running its evaluation" in said, said
    assert algorithm_latest_sample(task=task) is not None  # the first version will be compared with it
    assert Task.objects.get(pk=task.pk).algorithm_evaluation == "running"  # its holder records the outcome


def test_a_version_activated_before_the_algorithm_was_measured_is_compared_with_it_once_it_is(
        settings, django_capture_on_commit_callbacks):
    """An operator's model, trained while the evaluation waited: serving first keeps the algorithm for lack
    of its score, then the worker's evaluation decides again with both (a weak algorithm: neural wins)."""
    settings.PLASTICITY_SERVING_MIN_DWELL_S = 0.0  # the dwell would hold a switch for a minute
    task = _deferred(algorithm_path="tests.models_registry.creation_helpers.MostFrequent")
    model = model_create(task=task, name="early")
    with django_capture_on_commit_callbacks(execute=True):
        version = trained_version(model, epochs=20, measure=True, activate=True)
    state = ServingState.objects.get(task=task)
    assert state.implementation == "algorithmic" and "no held-out algorithmic score" in state.detail

    with django_capture_on_commit_callbacks(execute=True):
        done = task_algorithm_execute(task_id=task.pk)
    assert "gate" in done, done
    state.refresh_from_db()
    assert (state.implementation, state.version_id) == ("neural", version.pk), state.detail
    assert state.evidence["algorithmic_score"] == algorithm_latest_sample(task=task).score
