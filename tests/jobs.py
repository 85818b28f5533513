"""Work queued for workers, in tests: run what the queue holds in this process, and wait for it.

A generator task's creation job, and an uploaded task's algorithm evaluation.
"""

from __future__ import annotations

import time

from django_q.models import OrmQ

from improvement.services import ALGORITHM_TASK, TASK_JOB_TASK, task_first_model
from models_registry.task_algorithm import task_algorithm_execute
from models_registry.task_jobs import task_job_execute

#: Generous: the wait never asserts a duration, it only stops a test that would hang.
DEADLINE_S = 180.0


def run_queued_jobs(*, worker: str = "test-worker") -> list[str]:
    """What a worker does with each queued creation job (``improvement.tasks.task_create_job``).

    Without the connection hand-off and the heartbeat thread of a worker process: the test's
    transaction is still open. The queue row must be there (the test ran the request's on-commit
    callbacks), so this also proves the request queued the job.
    """
    done = []
    for row in OrmQ.objects.order_by("id"):
        if row.func() != TASK_JOB_TASK:
            continue
        (job_id,) = row.task["args"]
        row.delete()
        done.append(task_job_execute(job_id=job_id, worker=worker, after_create=task_first_model))
    return done


def job_wait(client, url: str, *, deadline_s: float = DEADLINE_S) -> dict:
    """Read the job at ``url`` until it has ended, running queued jobs meanwhile; returns its last body."""
    deadline = time.monotonic() + deadline_s
    while True:
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        if body["status"] in ("done", "failed"):
            return body
        assert time.monotonic() < deadline, f"the job is still {body['status']} after {deadline_s:g} s: {body}"
        if not run_queued_jobs():
            time.sleep(0.05)


def run_queued_evaluations() -> list[str]:
    """What a worker does with each queued algorithm evaluation (``improvement.tasks.task_algorithm_evaluate``).

    Like ``run_queued_jobs``: in this process, the queue row must be there, and it is consumed.
    """
    done = []
    for row in OrmQ.objects.order_by("id"):
        if row.func() != ALGORITHM_TASK:
            continue
        (task_id,) = row.task["args"]
        row.delete()
        done.append(task_algorithm_execute(task_id=task_id))
    return done


def algorithm_evaluation_wait(client, slug: str, *, deadline_s: float = DEADLINE_S) -> dict:
    """Read ``/api/tasks/<slug>`` until its algorithm's evaluation has ended, running queued evaluations meanwhile.

    Returns the task's last body.
    """
    deadline = time.monotonic() + deadline_s
    while True:
        response = client.get(f"/api/tasks/{slug}")
        assert response.status_code == 200, response.content
        body = response.json()
        if body["algorithm_evaluation"]["status"] in ("done", "failed", "none"):
            return body
        status = body["algorithm_evaluation"]["status"]
        assert time.monotonic() < deadline, f"the evaluation is still {status} after {deadline_s:g} s"
        if not run_queued_evaluations():
            time.sleep(0.05)
