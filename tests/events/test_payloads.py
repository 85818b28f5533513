"""Live-event payloads match the TypedDicts declared for them (events/payloads.py)."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import transaction

from events.models import OutboxEvent
from events.payloads import PAYLOAD_TYPES, RunPayload, payload_problems
from events.publisher import PayloadMismatch, publish
from hormones.services import brain_state_snapshot, hormone_release
from improvement.runs.execution import run_execute
from improvement.runs.lifecycle import run_create
from improvement.scheduler.loop import cycle_force, loop_start, loop_stop
from improvement.services import config_update
from models_registry.dataset_versions import task_rows_append
from models_registry.services import model_create, version_rollback
from models_registry.serving.drift import drift_detect, drift_reference
from models_registry.serving.input_drift import input_drift_record
from models_registry.serving.switching import serving_switch
from models_registry.task_jobs import task_job_create, task_job_execute
from tests.factories import blobs_csv, csv_task, trained_version

GOOD = RunPayload(run_id=1, model_id=2, model="t/m", task="t", strategy="training", status="running",
                  progress=0.5, message="epoch 3")


def test_a_matching_payload_has_no_problems():
    assert payload_problems("run.progress", GOOD) == []
    assert payload_problems("run.finished", {**GOOD, "gain": None}) == []
    assert payload_problems("config.changed", {"changed": {"improvement_interval": 60.0}}) == []


@pytest.mark.parametrize(
    ("event_type", "payload", "problem"),
    [
        ("run.progress", {k: v for k, v in GOOD.items() if k != "status"}, "payload.status: missing"),
        ("run.progress", {**GOOD, "progress": "half"}, "payload.progress: expected float"),
        ("run.progress", {**GOOD, "run_id": True}, "payload.run_id: expected int"),
        ("run.progress", {**GOOD, "surprise": 1}, "payload.surprise: not declared"),
        ("run.progress", {**GOOD, "points": [{"epoch": 1}, 3]}, "payload.points[1]: expected dict"),
        ("config.changed", {"loop": "paused"}, "payload.loop: 'paused' is not one of"),
        ("serving.switched", {"task": "t", "implementation": "neural", "version_id": "7", "reason": "x"},
         "payload.version_id"),
        ("no.such.event", {}, "unknown event type"),
    ],
)
def test_a_payload_that_does_not_match_its_type_is_named(event_type, payload, problem):
    problems = payload_problems(event_type, payload)
    assert any(problem in p for p in problems), problems


@pytest.mark.django_db
def test_the_publisher_refuses_a_mismatched_payload_and_writes_nothing(settings):
    settings.PLASTICITY_CHECK_EVENT_PAYLOADS = True
    with pytest.raises(PayloadMismatch, match="payload.status: missing"), transaction.atomic():
        publish("run.progress", {k: v for k, v in GOOD.items() if k != "status"})
    assert not OutboxEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_every_event_the_system_publishes_matches_its_declared_type(settings):
    """Drive every sender (runs, versions, serving, hormones, brain state, cycles, config, tasks, datasets) with the
    check off, then check every stored payload: a sender that drifts from its type fails here."""
    settings.PLASTICITY_CHECK_EVENT_PAYLOADS = False
    task = csv_task(n=240)
    model = model_create(task=task, name="m")
    v1 = trained_version(model, epochs=1)
    trained_version(model, epochs=2, seed=1, parent=v1)
    version_rollback(model=model)
    serving_switch(task=task, implementation="neural", version=v1, reason="operator", actor="alice")
    hormone_release(name="dopamine", delta=0.1, cause="test")
    brain_state_snapshot(queue_length=0, runs_in_flight=0, fleet_health=0.5, extra={"note": "test"})
    loop_start()
    cycle_force()
    loop_stop()
    config_update(improvement_interval=120.0)
    run = run_create(model=model, strategy="training", params={"time_budget_s": 3, "epochs": 5}, enqueue=False)
    run_execute(run_id=run.pk)
    job = task_job_create(name="squares", algorithm_path="tests.api.helpers.sum_of_squares",
                          sampler_spec={"shape": [2], "n_samples": 100})
    task_job_execute(job_id=job.pk, worker="w")
    task_rows_append(task=task, filename="more.csv", content=blobs_csv(n=30, seed=5))
    reference = drift_reference(np.zeros((10, 4), dtype=np.float32))
    input_drift_record(task=task, report=drift_detect(reference, np.ones((600, 4), dtype=np.float32), threshold=0.25,
                                                      min_rows=500))

    seen = set()
    for event in OutboxEvent.objects.order_by("id"):
        assert payload_problems(event.type, event.payload) == [], (event.type, event.payload)
        seen.add(event.type)
    expected = set(PAYLOAD_TYPES) - {"serving.drift"}  # drift: tests/models_registry/serving/test_shadow.py
    assert expected <= seen, f"not exercised: {sorted(expected - seen)}"
