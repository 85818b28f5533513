"""Generator tasks over the API: 202 with a creation job at once, the labelling in a worker.

The issue this answers: a generator task labelled thousands of samples inside the request
(11.6 s). Now the request only checks what is cheap; a worker labels, with progress.
"""

from __future__ import annotations

import time

import pytest
from django_q.models import OrmQ

from improvement.services import TASK_JOB_TASK
from models_registry.models import NeuralModel, Task, TaskCreationJob
from tests.api import helpers
from tests.api.test_uploads import _stored_datasets, _upload
from tests.factories import blobs_csv
from tests.jobs import job_wait, run_queued_jobs
from tests.workers import qcluster

pytestmark = pytest.mark.django_db

SPEC = {"shape": [3], "distribution": "uniform", "low": -1, "high": 1, "n_samples": 600}


def _post(client, *, algorithm: str = "tests.api.helpers.recorded_sum_of_squares", **fields):
    return client.post("/api/tasks", {"name": "Squares", "algorithm_path": algorithm, "sampler_spec": SPEC,
                                      **fields}, format="json")


def test_the_request_answers_202_without_labelling_and_a_worker_creates_the_task(
        root, bob, django_capture_on_commit_callbacks):
    helpers.LABELLED.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = _post(root, genome={"kind": "mlp", "hidden": [12]})
    assert response.status_code == 202, response.content
    body = response.json()
    assert response["Location"] == body["url"] == f"/api/task-jobs/{body['id']}"
    assert body["status"] == "pending" and body["progress"] == 0.0 and body["task"] is None
    assert body["slug"] == "squares" and body["created_by"] == "root"
    assert helpers.LABELLED == [], "the algorithm was called in the request"
    assert not Task.objects.exists() and _stored_datasets() == []
    (queued,) = OrmQ.objects.all()
    assert queued.func() == TASK_JOB_TASK and queued.task["args"] == (body["id"],)

    with django_capture_on_commit_callbacks(execute=True):
        job = job_wait(bob, response["Location"])  # any logged-in user may follow it
    assert job["status"] == "done" and job["progress"] == 1.0 and job["error"] == "", job
    assert job["task"] == "squares" and job["message"] == "task squares created"
    assert helpers.LABELLED[0] == SPEC["n_samples"], "the worker labelled every sample (one batch)"
    task = Task.objects.get(slug="squares")
    assert task.source == "generator" and task.n_samples == SPEC["n_samples"] and len(_stored_datasets()) == 1
    (model,) = NeuralModel.objects.filter(task=task)
    assert model.name == "auto" and "mlp" in model.description  # the first model, from the given genome
    assert [row.func() for row in OrmQ.objects.all()] == ["improvement.tasks.model_bootstrap"]  # its first version
    assert root.get("/api/tasks/squares").json()["models"] == [{"id": model.pk, "name": "auto"}]


@pytest.mark.parametrize(("algorithm", "expected"), [
    ("tests.api.helpers.raises_on_call", "RuntimeError: the integrator diverged"),
    ("tests.api.helpers.gives_nan", "value nan is not a finite number"),
])
def test_a_failing_algorithm_fails_the_job_and_leaves_no_task(root, algorithm, expected,
                                                               django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = _post(root, algorithm=algorithm)
    assert response.status_code == 202, response.content  # loading it is fine; calling it is not
    job = job_wait(root, response["Location"])
    assert job["status"] == "failed" and job["task"] is None, job
    assert expected in job["error"]
    assert not Task.objects.exists() and _stored_datasets() == [] and not NeuralModel.objects.exists()


def test_a_slug_taken_meanwhile_fails_the_job_and_keeps_the_other_task(root, alice,
                                                                      django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = _post(root, slug="taken")
    assert response.status_code == 202
    assert _upload(alice, blobs_csv(n=80), slug="taken").status_code == 201  # an upload is quicker
    job = job_wait(root, response["Location"])
    assert job["status"] == "failed" and job["error"] == "slug: a task named 'taken' already exists", job
    assert Task.objects.get().source == "upload" and len(_stored_datasets()) == 1


def test_cheap_refusals_are_answered_in_the_request(root):
    assert _upload(root, blobs_csv(n=80), slug="csv").status_code == 201
    taken = _post(root, slug="csv")
    assert taken.status_code == 400 and "already exists" in taken.json()["error"]["message"]
    assert _post(root, slug="pending").status_code == 202
    twice = _post(root, slug="pending")
    assert twice.status_code == 400
    assert "is being created already" in twice.json()["error"]["message"]
    bomb = root.post("/api/tasks", {"name": "Bomb", "algorithm_path": "tests.api.helpers.recorded_sum_of_squares",
                                    "sampler_spec": {"shape": [1000], "n_samples": 200_000}}, format="json")
    assert bomb.status_code == 400 and "numbers; at most" in bomb.json()["error"]["message"]
    assert TaskCreationJob.objects.count() == 1


def test_jobs_are_read_by_logged_in_users_only(root, bob, anon):
    job_url = _post(root)["Location"]
    assert bob.get(job_url).status_code == 200
    assert anon.get(job_url).status_code == 401
    missing = bob.get("/api/task-jobs/999999")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert bob.post(job_url, {}, format="json").status_code in (403, 405)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_labels_and_creates_the_task(root, tmp_path):
    """The whole path through django-q2: the queued package, the worker process, its heartbeat."""
    response = _post(root, algorithm="tests.api.helpers.sum_of_squares")
    assert response.status_code == 202, response.content
    with qcluster(workers=1, log_path=tmp_path / "qcluster.log"):
        deadline = time.monotonic() + 240
        while (job := root.get(response["Location"]).json())["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline, (job, (tmp_path / "qcluster.log").read_text()[-3000:])
            time.sleep(0.1)
    assert job["status"] == "done", (job, (tmp_path / "qcluster.log").read_text()[-3000:])
    assert job["attempts"] == 1 and job["heartbeat_at"] is not None
    assert NeuralModel.objects.filter(task__slug=job["task"], name="auto").count() == 1
    # The worker may stop before acknowledging the message: a second delivery of it does nothing.
    assert all("not claimable" in line for line in run_queued_jobs())
    assert NeuralModel.objects.filter(task__slug=job["task"]).count() == 1
