"""The task creation job's state machine (``models_registry/task_jobs.py``): claims, progress, stale workers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from events.models import OutboxEvent
from models_registry.choices import TaskJobStatus
from models_registry.models import Task, TaskCreationJob
from models_registry.task_jobs import (
    CREATING_AT,
    MAX_ATTEMPTS,
    JobLost,
    JobReporter,
    task_job_claim,
    task_job_create,
    task_job_execute,
    task_jobs_reconcile,
)
from tests.api import helpers
from tests.api.test_uploads import _stored_datasets

pytestmark = pytest.mark.django_db


def _job(n_samples: int = 300, algorithm: str = "tests.api.helpers.recorded_sum_of_squares") -> TaskCreationJob:
    return task_job_create(name="squares", algorithm_path=algorithm,
                           sampler_spec={"shape": [3], "low": -1, "high": 1, "n_samples": n_samples})


def _make_stale(job: TaskCreationJob) -> None:
    old = timezone.now() - timedelta(seconds=settings.PLASTICITY_HEARTBEAT_TIMEOUT + 1)
    TaskCreationJob.objects.filter(pk=job.pk).update(heartbeat_at=old)


def _events(job: TaskCreationJob) -> list[dict]:
    return [e.payload for e in OutboxEvent.objects.filter(type="task_job.progress").order_by("id")
            if e.payload["job_id"] == job.pk]


def test_progress_advances_while_the_samples_are_labelled():
    job = _job(n_samples=3000)  # three batches of at most 1,024
    done = task_job_execute(job_id=job.pk, worker="w", progress_interval_s=0)
    assert done.endswith("task squares created (3000 samples)"), done
    events = _events(job)
    assert events[0]["status"] == "pending" and events[-1]["status"] == "done" and events[-1]["progress"] == 1.0
    labelling = [e for e in events if e["message"].startswith("labelled")]
    assert [e["message"] for e in labelling] == ["labelled 1,024 of 3,000 samples", "labelled 2,048 of 3,000 samples",
                                                 "labelled 3,000 of 3,000 samples"]
    progress = [e["progress"] for e in labelling]
    assert 0 < progress[0] < progress[1] < progress[2] == CREATING_AT
    running = [e["progress"] for e in events if e["status"] == "running"]
    assert running == sorted(running), "progress never goes back"
    job.refresh_from_db()
    assert job.status == TaskJobStatus.DONE and job.task == Task.objects.get(slug="squares") and job.finished_at


def test_progress_is_written_a_few_times_a_second_at_most():
    job = task_job_claim(job_id=_job().pk, worker="w")
    now = [0]
    reporter = JobReporter(job, interval_s=0.25, clock=lambda: now[0] / 1000)
    for i in range(100):  # one report every 10 ms for a second
        now[0] = i * 10
        reporter(i / 100, f"step {i}")
    assert reporter.writes == 4  # at 0, 0.25, 0.5 and 0.75 s
    job.refresh_from_db()
    assert job.progress == pytest.approx(0.75) and job.message == "step 75"


def test_a_stale_running_job_is_claimed_again_and_completes():
    job = _job()
    dead = task_job_claim(job_id=job.pk, worker="dead-worker")
    assert dead is not None and dead.attempts == 1
    # Its worker is still beating: nobody else may take it.
    assert "not claimable" in task_job_execute(job_id=job.pk, worker="eager")
    _make_stale(job)  # no heartbeat within PLASTICITY_HEARTBEAT_TIMEOUT: its worker died
    assert "task squares created" in task_job_execute(job_id=job.pk, worker="second")
    job.refresh_from_db()
    assert job.status == TaskJobStatus.DONE and job.attempts == 2 and job.worker == "second"
    with pytest.raises(JobLost):  # had the first worker only been slow, its next write stops it
        JobReporter(dead).flush(0.5, "still here")
    assert Task.objects.count() == 1 and len(_stored_datasets()) == 1


def test_a_worker_that_died_after_creating_the_task_is_not_labelled_again():
    job = _job()

    def dies(*, task, genome):
        raise KeyboardInterrupt  # the process ends between creating the task and its first model

    with pytest.raises(KeyboardInterrupt):
        task_job_execute(job_id=job.pk, worker="dying", after_create=dies)
    job.refresh_from_db()
    assert job.status == TaskJobStatus.RUNNING and job.task is not None  # linked with the task's row
    _make_stale(job)
    helpers.LABELLED.clear()
    models = []
    task_job_execute(job_id=job.pk, worker="second", after_create=lambda *, task, genome: models.append(task))
    job.refresh_from_db()
    assert job.status == TaskJobStatus.DONE and models == [job.task]
    assert helpers.LABELLED == [] and Task.objects.count() == 1 and len(_stored_datasets()) == 1


def test_a_worker_whose_job_was_taken_creates_nothing():
    job = _job(algorithm="tests.models_registry.creation_helpers.hands_the_job_over")
    assert "no longer held" in task_job_execute(job_id=job.pk, worker="slow")
    job.refresh_from_db()
    assert job.status == TaskJobStatus.RUNNING and job.worker == "other" and job.task is None
    assert not Task.objects.exists() and _stored_datasets() == []


def test_the_reconciler_requeues_a_stale_job_and_gives_up_after_the_last_attempt():
    job = _job()
    task_job_claim(job_id=job.pk, worker="dead")
    assert task_jobs_reconcile() == []  # still beating
    _make_stale(job)
    assert task_jobs_reconcile() == [job.pk]
    job.refresh_from_db()
    assert job.status == TaskJobStatus.PENDING and job.message.startswith("requeued")
    for attempt in range(2, MAX_ATTEMPTS + 1):
        assert task_job_claim(job_id=job.pk, worker=f"dead-{attempt}") is not None
        _make_stale(job)
    assert task_jobs_reconcile() == []
    job.refresh_from_db()
    assert job.status == TaskJobStatus.FAILED and f"stopped {MAX_ATTEMPTS} times" in job.error
    assert not Task.objects.exists()
