"""Feedback: predict answers carry an id; reported truths become live scores that switching acts on.

Actors: bob (viewer, a client that may predict), an anonymous visitor.
"""

from __future__ import annotations

import io
import math
import time

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from models_registry.services import task_create_from_upload
from models_registry.serving.choices import SwitchReason
from models_registry.serving.models import Feedback, ServingState, ServingSwitch
from models_registry.serving.prediction_ids import classes_kind, prediction_id_issue, prediction_id_read
from models_registry.serving.router import serving_router
from models_registry.serving.switching import NEURAL, serving_reevaluate
from tests.factories import csv_task
from tests.models_registry.serving.helpers import blobs_inputs, sample

pytestmark = pytest.mark.django_db

Z = 1.959963984540054  # the 97.5 % normal quantile


def _predict(client, slug: str, inputs) -> dict:
    answer = client.post(f"/api/tasks/{slug}/predict", {"inputs": inputs}, format="json")
    assert answer.status_code == 200, answer.content
    return answer.json()


def _feedback(client, slug: str, items):
    return client.post(f"/api/tasks/{slug}/feedback", {"items": items}, format="json")


def _live(client, slug: str) -> list[dict]:
    answer = client.get(f"/api/tasks/{slug}/feedback")
    assert answer.status_code == 200, answer.content
    return answer.json()["live"]


def _wrong(label: int, classes: int = 3) -> int:
    return (label + 1) % classes


def _wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson's 95 % interval, written out here independently of the code under test."""
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return centre - half, centre + half


# ------------------------------------------------------------------------------ ids in predict answers


def test_a_predict_answer_carries_one_signed_id_for_its_batch(blobs_task, viewer, client_for):
    task = blobs_task
    data = _predict(client_for(viewer), task.slug, blobs_inputs(5))
    ref = prediction_id_read(data["prediction_id"], max_age_s=60, limit=16384)
    assert (ref.task_id, ref.implementation, ref.version_id) == (task.pk, "algorithmic", None)
    assert ref.outputs.tolist() == data["outputs"]


def test_the_npy_path_carries_the_id_too_and_a_warm_predict_still_makes_no_query(served_task, viewer, settings):
    task, _model, _v1, v2 = served_task
    sample(task, score=0.90, p50=2.0)
    sample(task, version=v2, score=0.95, p50=0.5)
    serving_reevaluate(task=task)
    settings.PLASTICITY_SERVING_REFRESH_S = 3600.0
    serving_router().invalidate()
    client = APIClient()  # a token client: its verification is cached, as in the hot-path tests
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=viewer).key}")
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(blobs_inputs(3), dtype=np.float32))
    body = buffer.getvalue()
    assert _predict(client, task.slug, blobs_inputs(1)[0])["implementation"] == NEURAL  # warm
    with CaptureQueriesContext(connection) as queries:
        answer = client.post(f"/api/tasks/{task.slug}/predict", body, content_type="application/x-npy")
        single = _predict(client, task.slug, blobs_inputs(1)[0])
    assert len(queries) == 0, [q["sql"] for q in queries.captured_queries]
    assert answer.status_code == 200, answer.content
    ref = prediction_id_read(answer.json()["prediction_id"], max_age_s=60, limit=16384)
    assert (ref.implementation, ref.version_id, ref.outputs.tolist()) == (NEURAL, v2.pk, answer.json()["outputs"])
    assert prediction_id_read(single["prediction_id"], max_age_s=60, limit=16384).rows == 1


def test_a_batch_above_the_id_cap_is_answered_without_an_id(blobs_task, viewer, client_for, settings):
    settings.PLASTICITY_PREDICTION_ID_MAX_VALUES = 4
    data = _predict(client_for(viewer), blobs_task.slug, blobs_inputs(5))
    assert data["prediction_id"] is None and len(data["outputs"]) == 5


# ------------------------------------------------------------------------------ live accuracy


def test_feedback_gives_live_accuracy_with_wilsons_interval(blobs_task, viewer, client_for):
    task = blobs_task
    client = client_for(viewer)
    data = _predict(client, task.slug, blobs_inputs(20, seed=3))
    pid, outputs = data["prediction_id"], data["outputs"]
    # 15 rows right (half of them named by their class label), 5 wrong: accuracy 15 / 20.
    truths = [o if i < 15 else _wrong(o) for i, o in enumerate(outputs)]
    items = [{"prediction_id": pid, "row": i, "truth": f"c{truths[i]}" if i % 2 else truths[i]} for i in range(10)]
    items.append({"prediction_id": pid, "rows": list(range(10, 20)), "truths": truths[10:]})
    answer = _feedback(client, task.slug, items)
    assert answer.status_code == 200, answer.content
    assert answer.json() | {"switch": None} == {"task": task.slug, "received": 20, "recorded": 20, "duplicates": 0,
                                                "switch": None}
    assert Feedback.objects.filter(task=task).count() == 20
    [live] = _live(client, task.slug)
    low, high = _wilson(15, 20)
    assert (low, high) == pytest.approx((0.5313, 0.8881), abs=1e-4)  # by hand: p = 0.75, n = 20
    assert (live["implementation"], live["version_id"], live["n"], live["correct"]) == ("algorithmic", None, 20, 15)
    assert live["accuracy"] == live["score"] == pytest.approx(0.75) and live["metric"] == "accuracy"
    assert live["accuracy_ci95"] == pytest.approx([low, high]) == live["score_ci95"]
    assert live["enough"] is False and live["mae"] is None
    # The serving API shows the same numbers.
    serving = client.get(f"/api/tasks/{task.slug}/serving").json()
    assert serving["comparison"]["feedback"]["live"][0]["accuracy_ci95"] == pytest.approx([low, high])


def _values_task():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(240, 4))
    y = np.stack([X[:, 0] + X[:, 1], X[:, 2] - 2 * X[:, 3]], axis=1) + rng.normal(0, 0.1, size=(240, 2))
    buffer = io.BytesIO()
    np.savez(buffer, X=X, y=y)
    return task_create_from_upload(name="sums", filename="sums.npz", content=buffer.getvalue())


def test_feedback_on_values_gives_live_mae_and_r2_with_intervals(viewer, client_for):
    task = _values_task()
    assert (task.output_kind, task.n_outputs, task.metric) == ("values", 2, "r2")
    client = client_for(viewer)
    data = _predict(client, task.slug, np.random.default_rng(1).normal(size=(10, 4)).tolist())
    predicted = np.asarray(data["outputs"], dtype=np.float32).astype(np.float64)  # what the id carries
    offsets = np.asarray([[0.1 * i, -0.1 * i] for i in range(10)])
    truths = predicted + offsets
    answer = _feedback(client, task.slug, [{"prediction_id": data["prediction_id"], "rows": list(range(10)),
                                            "truths": truths.tolist()}])
    assert answer.status_code == 200, answer.content
    [live] = _live(client, task.slug)
    # By hand: row i is off by 0.1·i on both outputs, so its absolute error is 0.1·i.
    errors = 0.1 * np.arange(10)
    mae, half = errors.mean(), Z * errors.std(ddof=1) / math.sqrt(10)
    assert mae == pytest.approx(0.45) and half == pytest.approx(0.18765, abs=1e-4)
    assert live["mae"] == pytest.approx(mae, rel=1e-5)
    assert live["mae_ci95"] == pytest.approx([mae - half, mae + half], rel=1e-5)
    r2 = np.mean([max(0.0, 1 - np.sum(offsets[:, j] ** 2) / np.sum((truths[:, j] - truths[:, j].mean()) ** 2))
                  for j in range(2)])
    assert live["r2"] == live["score"] == pytest.approx(r2, rel=1e-5)
    assert live["r2_ci95"][0] <= live["r2"] <= live["r2_ci95"][1] and live["accuracy"] is None


def test_the_same_report_counts_once(blobs_task, viewer, client_for):
    task = blobs_task
    client = client_for(viewer)
    data = _predict(client, task.slug, blobs_inputs(4))
    items = [{"prediction_id": data["prediction_id"], "row": i, "truth": o} for i, o in enumerate(data["outputs"])]
    assert _feedback(client, task.slug, items).json()["recorded"] == 4
    again = _feedback(client, task.slug, items).json()  # a retried request
    assert (again["recorded"], again["duplicates"]) == (0, 4)
    twice = _feedback(client, task.slug, [items[0], items[0]]).json()
    assert (twice["received"], twice["recorded"], twice["duplicates"]) == (2, 0, 2)
    single = _predict(client, task.slug, blobs_inputs(1)[0])
    item = {"prediction_id": single["prediction_id"], "truth": single["outputs"][0]}  # row 0 by default
    assert _feedback(client, task.slug, [item, item]).json() | {"switch": None} == {
        "task": task.slug, "received": 2, "recorded": 1, "duplicates": 1, "switch": None}
    assert Feedback.objects.filter(task=task).count() == 5
    assert _live(client, task.slug)[0]["n"] == 5


# ------------------------------------------------------------------------------ refusals


def _refused(answer, message_start: str) -> dict:
    assert answer.status_code == 400, answer.content
    error = answer.json()["error"]
    assert error["code"] == "invalid_feedback"
    assert error["message"].startswith(message_start), error["message"]
    return error


def test_tampered_foreign_and_expired_ids_are_refused_naming_the_item(blobs_task, viewer, client_for):
    task = blobs_task
    client = client_for(viewer)
    data = _predict(client, task.slug, blobs_inputs(2))
    good = {"prediction_id": data["prediction_id"], "row": 0, "truth": 0}
    pid = data["prediction_id"]
    tampered = {"prediction_id": pid[:30] + ("A" if pid[30] != "A" else "B") + pid[31:], "truth": 0}
    error = _refused(_feedback(client, task.slug, [good, tampered]), "items[1].prediction_id: the signature does not match")
    assert error["details"]["errors"] == [{"item": 1, "field": "prediction_id", "message": (
        "the signature does not match: the id was altered or not issued by this service")}]

    other = csv_task(name="other", seed=2)
    foreign = _predict(client, other.slug, blobs_inputs(1)[0])["prediction_id"]
    _refused(_feedback(client, task.slug, [{"prediction_id": foreign, "truth": 0}, good]),
             f"items[0].prediction_id: issued for another task, not {task.slug}")

    old = prediction_id_issue(task_id=task.pk, version_id=None, kind=classes_kind(task.n_outputs),
                              outputs=np.asarray([1]), limit=16384, now=time.time() - 10 * 86400)
    _refused(_feedback(client, task.slug, [good, good, {"prediction_id": old, "truth": 1}]),
             "items[2].prediction_id: expired: issued 10.0 days ago")
    assert not Feedback.objects.exists()  # nothing recorded from a refused request, the good items included


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"row": 2, "truth": 0}, "items[0].row: expected a row index 0–1 of the predicted batch, got 2"),
        ({"row": True, "truth": 0}, "items[0].row: expected a row index"),
        ({"truth": "c7"}, "items[0].truth: expected a class index 0–2 or one of c0, c1, c2, got 'c7'"),
        ({"truth": 3}, "items[0].truth: expected a class index 0–2"),
        ({}, "items[0]: truth: this field is required"),
        ({"rows": [0, 1], "truths": [0]}, "items[0]: rows and truths: two lists of the same non-zero length"),
        ({"rows": [0, 5], "truths": [0, 1]}, "items[0].rows[1]: expected a row index 0–1"),
        ({"rows": [0, 1], "truths": [0, None]}, "items[0].truths[1]: expected a class index"),
    ],
)
def test_a_bad_row_or_truth_is_named(blobs_task, viewer, client_for, item, message):
    client = client_for(viewer)
    pid = _predict(client, blobs_task.slug, blobs_inputs(2))["prediction_id"]
    _refused(_feedback(client, blobs_task.slug, [{"prediction_id": pid, **item}]), message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "items: this field is required"),
        ({"items": []}, "items: expected a non-empty list, got []"),
        ({"items": "abc"}, "items: expected a non-empty list, got 'abc'"),
        ([1, 2], "items: this field is required"),
        ({"items": [7]}, "items[0]: expected an object"),
        ({"items": [{"truth": 1}]}, "items[0].prediction_id: this field is required"),
    ],
)
def test_a_malformed_body_is_refused(blobs_task, viewer, client_for, body, message):
    answer = client_for(viewer).post(f"/api/tasks/{blobs_task.slug}/feedback", body, format="json")
    _refused(answer, message)


def test_a_request_reports_a_bounded_number_of_rows(blobs_task, viewer, client_for, settings):
    settings.PLASTICITY_FEEDBACK_MAX_ROWS = 3
    client = client_for(viewer)
    data = _predict(client, blobs_task.slug, blobs_inputs(4))
    items = [{"prediction_id": data["prediction_id"], "rows": [0, 1, 2, 3], "truths": data["outputs"]}]
    _refused(_feedback(client, blobs_task.slug, items), "items[0]: a request may report at most 3 rows")


def test_an_anonymous_visitor_may_neither_report_nor_read(blobs_task, client_for):
    anonymous = client_for(None)
    assert _feedback(anonymous, blobs_task.slug, [{"prediction_id": "x", "truth": 0}]).status_code in (401, 403)
    assert anonymous.get(f"/api/tasks/{blobs_task.slug}/feedback").status_code in (401, 403)


def test_an_unknown_task_is_a_404(viewer, client_for):
    assert client_for(viewer).get("/api/tasks/nope/feedback").status_code == 404


# ------------------------------------------------------------------------------ switching on live feedback


def test_live_accuracy_below_the_floor_switches_serving_back_with_the_evidence(served_task, viewer, client_for):
    task, _model, _v1, v2 = served_task
    sample(task, score=0.90, p50=2.0)  # the algorithm, held out: floor 0.90 − 0.02
    sample(task, version=v2, score=0.95, p50=0.5)
    serving_reevaluate(task=task)
    assert ServingState.objects.get(task=task).implementation == NEURAL
    client = client_for(viewer)
    data = _predict(client, task.slug, blobs_inputs(40, seed=5))
    assert (data["implementation"], data["version_id"]) == (NEURAL, v2.pk)
    pid, outputs = data["prediction_id"], data["outputs"]

    # 20 wrong answers: below the 30 reports a decision needs, serving stays neural.
    first = _feedback(client, task.slug, [{"prediction_id": pid, "rows": list(range(20)),
                                           "truths": [_wrong(o) for o in outputs[:20]]}])
    assert first.status_code == 200, first.content
    assert first.json()["switch"] is None
    assert ServingState.objects.get(task=task).implementation == NEURAL

    # 20 more, half right: 10 of 40 right, Wilson upper bound far below the floor: back to the algorithm at
    # once (the dwell time does not hold a switch away from a neural version below the floor).
    truths = [o if i % 2 else _wrong(o) for i, o in enumerate(outputs[20:])]
    second = _feedback(client, task.slug, [{"prediction_id": pid, "rows": list(range(20, 40)), "truths": truths}])
    switch = second.json()["switch"]
    assert switch is not None and (switch["to_implementation"], switch["reason"]) == ("algorithmic",
                                                                                      SwitchReason.LIVE_BELOW_FLOOR)
    recorded = ServingSwitch.objects.get(pk=switch["id"])
    live = recorded.evidence["neural_live"]
    low, high = _wilson(10, 40)
    assert (live["n"], live["score"]) == (40, pytest.approx(0.25))
    assert (live["low"], live["high"]) == pytest.approx((low, high))
    assert recorded.evidence["live_min_count"] == 30 and recorded.evidence["floor"] == pytest.approx(0.88)
    assert "neural live accuracy 0.2500" in recorded.detail and "< floor 0.8800" in recorded.detail
    assert ServingState.objects.get(task=task).implementation == "algorithmic"
    # A later re-evaluation (an activation, an operator's "auto") keeps the algorithm while the evidence stands.
    assert serving_reevaluate(task=task).decision.reason == SwitchReason.LIVE_BELOW_FLOOR
    assert _predict(client, task.slug, blobs_inputs(1)[0])["implementation"] == "algorithmic"
