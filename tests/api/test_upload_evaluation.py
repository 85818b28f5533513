"""An upload's algorithm is fitted and scored by a worker, not in the request.

The issue this answers: ``POST /api/tasks`` with a CSV fitted the task's algorithm (gradient
boosting for a table) on the training split and scored it on the gate and sealed test splits
inside the request. Now the request answers 201 with the task, its algorithm's evaluation
pending, and a worker does the rest; the API says when it is done, with the scores.
"""

from __future__ import annotations

import time

import pytest
from django.utils import timezone
from django_q.models import OrmQ, Success

from improvement.services import ALGORITHM_TASK, BOOTSTRAP_TASK, model_bootstrap
from models_registry.choices import ScoreSplit
from models_registry.models import NeuralModel, PerformanceSample, Task
from models_registry.selectors import algorithm_latest_sample
from models_registry.services import task_create_from_upload
from models_registry.serving.models import ServingState
from models_registry.task_algorithm import task_algorithm_execute
from tests.api import helpers
from tests.api.test_uploads import _upload
from tests.factories import blobs_csv
from tests.jobs import DEADLINE_S, algorithm_evaluation_wait, run_queued_evaluations
from tests.workers import qcluster

pytestmark = pytest.mark.django_db

RECORDED = "tests.api.helpers.RecordedNearestMean"
FIT_FAILS = "tests.models_registry.creation_helpers.FitFails"


def _algorithm_samples(slug: str) -> int:
    return PerformanceSample.objects.filter(task__slug=slug, version=None).count()


def _algorithm_warnings(body: dict) -> list[str]:
    return [warning for warning in body["warnings"] if warning.startswith("algorithm:")]


def test_the_request_does_not_fit_the_algorithm_and_a_worker_does(root, bob, django_capture_on_commit_callbacks):
    helpers.FITTED.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = _upload(root, blobs_csv(n=240), algorithm_path=RECORDED, slug="nearest")
    assert response.status_code == 201, response.content
    body = response.json()
    evaluation = body["algorithm_evaluation"]
    assert (evaluation["status"], evaluation["gate_score"]) == ("pending", None)
    assert helpers.FITTED == [], "the algorithm was fitted in the request"
    assert _algorithm_samples("nearest") == 0
    assert body["models"] and _algorithm_warnings(body) == []  # the task exists, with its first model, at once
    queued = [(row.func(), row.task["args"]) for row in OrmQ.objects.order_by("id")]
    task = Task.objects.get(slug="nearest")
    assert (ALGORITHM_TASK, (task.pk,)) in queued and BOOTSTRAP_TASK in [func for func, _ in queued]

    body = algorithm_evaluation_wait(bob, "nearest")  # any logged-in user may follow it
    assert helpers.FITTED == [task.n_train], "the worker fitted it once, on the training split"
    gate = algorithm_latest_sample(task=task)
    assert gate is not None and gate.split == ScoreSplit.GATE and gate.latency_p50_ms is not None
    test = PerformanceSample.objects.get(task=task, version=None, split=ScoreSplit.TEST)  # the sealed report
    assert test.score is not None
    evaluation = body["algorithm_evaluation"]
    assert evaluation["status"] == "done" and evaluation["updated_at"] is not None
    assert evaluation["gate_score"] == gate.score
    assert evaluation["gate_score"] > 0.9  # well separated blobs
    task.refresh_from_db()
    assert task.algorithm_evaluation_attempts == 1 and _algorithm_warnings(body) == []

    # A second delivery of the same message does nothing: no fit, no sample.
    assert "no pending algorithm evaluation" in task_algorithm_execute(task_id=task.pk)
    assert helpers.FITTED == [task.n_train] and _algorithm_samples("nearest") == 2


def test_an_algorithm_that_cannot_fit_ends_failed_with_a_warning(root, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = _upload(root, blobs_csv(n=240), algorithm_path=FIT_FAILS, slug="broken")
    assert response.status_code == 201, response.content  # loading it is fine; fitting it is not
    assert response.json()["algorithm_evaluation"]["status"] == "pending" and _algorithm_warnings(response.json()) == []

    body = algorithm_evaluation_wait(root, "broken")
    evaluation = body["algorithm_evaluation"]
    assert (evaluation["status"], evaluation["gate_score"]) == ("failed", None)
    (warning,) = _algorithm_warnings(body)
    assert warning.startswith(f"algorithm: {FIT_FAILS} could not be evaluated") and "cannot fit" in warning
    assert _algorithm_samples("broken") == 0
    assert Task.objects.filter(slug="broken").exists()  # the task stays; neural models can still learn it


def test_the_first_version_is_trained_after_the_algorithm_is_measured(alice, django_capture_on_commit_callbacks):
    """The bootstrap may come first (several workers): it measures the algorithm before training, so the
    first version's activation decides serving with both scores; the queued evaluation then does nothing."""
    with django_capture_on_commit_callbacks(execute=True):
        response = _upload(alice, blobs_csv(n=300), slug="first")
    assert response.status_code == 201, response.content
    model = NeuralModel.objects.get(pk=response.json()["models"][0]["id"])
    with django_capture_on_commit_callbacks(execute=True):  # the activation decides serving on commit
        done = model_bootstrap(model=model)
    assert "v1" in done
    task = Task.objects.get(slug="first")
    assert task.algorithm_evaluation == "done" and algorithm_latest_sample(task=task) is not None
    state = ServingState.objects.get(task=task)
    assert state.evidence["algorithmic_score"] == algorithm_latest_sample(task=task).score
    assert "no held-out" not in state.detail
    (delivered,) = run_queued_evaluations()
    assert delivered.startswith(f"task #{task.pk}: no pending algorithm evaluation")
    assert alice.get("/api/tasks/first").json()["algorithm_evaluation"]["status"] == "done"


def test_a_task_made_without_a_request_is_measured_at_once(root):
    """Scripts and the demo seed keep the evaluation in place (``evaluate_algorithm`` defaults to now)."""
    helpers.FITTED.clear()
    task = task_create_from_upload(name="script", filename="script.csv", content=blobs_csv(n=240),
                                   algorithm_path=RECORDED)
    assert helpers.FITTED == [task.n_train] and task.algorithm_evaluation == "done"
    assert root.get("/api/tasks/script").json()["algorithm_evaluation"]["status"] == "done"
    assert not OrmQ.objects.exists()
    assert task.algorithm_evaluation_at is not None and task.algorithm_evaluation_at <= timezone.now()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_evaluates_the_algorithm(alice, tmp_path):
    """The whole path through django-q2: the message queued on commit, the worker process, its entry point."""
    response = _upload(alice, blobs_csv(n=240), slug="queued")
    assert response.status_code == 201, response.content
    for row in OrmQ.objects.all():
        if row.func() == BOOTSTRAP_TASK:
            row.delete()  # the first version's training would measure the algorithm itself: leave it to the evaluation
    log = tmp_path / "qcluster.log"
    with qcluster(workers=1, log_path=log):
        deadline = time.monotonic() + DEADLINE_S
        body = alice.get("/api/tasks/queued").json()
        while body["algorithm_evaluation"]["status"] in ("pending", "running"):
            assert time.monotonic() < deadline, (body["algorithm_evaluation"], log.read_text()[-3000:])
            time.sleep(0.1)
            body = alice.get("/api/tasks/queued").json()
        # The task records "done" before it returns; the cluster's monitor saves its result a moment later.
        while not Success.objects.filter(func=ALGORITHM_TASK).exists():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
    assert body["algorithm_evaluation"]["status"] == "done", (body, log.read_text()[-3000:])
    assert body["algorithm_evaluation"]["gate_score"] is not None
    assert not run_queued_evaluations()  # nothing left for a second delivery
