"""The serving API: predict (and its 400s), the serving state, the operator's override, switches."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from models_registry.implementations import algorithm_predict_fn, version_predict_fn
from models_registry.serving.choices import SwitchReason
from models_registry.serving.models import ServingState, ServingSwitch
from models_registry.serving.router import serving_router
from models_registry.serving.switching import ALGORITHMIC, NEURAL, serving_switch
from tests.models_registry.serving.helpers import blobs_inputs, sample

pytestmark = pytest.mark.django_db

EXPECTED = "expected shape [4] or [N, 4] with 1 ≤ N ≤ 1024"


def _predict(client, slug: str, body, **kwargs):
    return client.post(f"/api/tasks/{slug}/predict", body, format="json", **kwargs)


def _neural(task, version):
    serving_switch(task=task, implementation=NEURAL, version=version, reason=SwitchReason.OPERATOR)
    serving_router().invalidate()


# ------------------------------------------------------------------------------ predict


def test_predict_with_the_algorithm(blobs_task, viewer, client_for):
    task = blobs_task
    inputs = blobs_inputs(5)
    answer = _predict(client_for(viewer), task.slug, {"inputs": inputs})
    assert answer.status_code == 200, answer.content
    data = answer.json()
    expected = algorithm_predict_fn(task)(np.asarray(inputs, dtype=np.float32)).tolist()
    assert data == {"task": task.slug, "implementation": "algorithmic", "version": None, "version_id": None,
                    "runtime": None, "outputs": expected, "labels": [f"c{i}" for i in expected], "batch_size": 5,
                    "prediction_id": data["prediction_id"]}
    assert isinstance(data["prediction_id"], str) and len(data["prediction_id"]) < 100  # one id for the batch


def test_predict_with_the_neural_version_and_a_token(served_task, viewer):
    task, model, v1, v2 = served_task
    _neural(task, v2)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=viewer).key}")
    one = blobs_inputs(1)[0]
    data = _predict(client, task.slug, {"inputs": one}).json()
    assert (data["implementation"], data["version"], data["version_id"], data["runtime"]) == (
        "neural", v2.number, v2.pk, "torch_fp32")
    expected = int(version_predict_fn(v2)(np.asarray([one], dtype=np.float32)).argmax(axis=1)[0])
    assert data["outputs"] == [expected] and data["labels"] == [f"c{expected}"] and data["batch_size"] == 1


@pytest.mark.parametrize(
    ("body", "got"),
    [
        ({"inputs": [[1.0, 2.0, 3.0]]}, "got [1, 3]"),  # wrong shape
        ({"inputs": [[[1.0] * 4]]}, "got [1, 1, 4]"),  # one dimension too many
        ({"inputs": ["a", "b", "c", "d"]}, "got strings"),
        ({"inputs": [1.0, "2", 3.0, 4.0]}, "got strings"),
        ({"inputs": [1.0, None, 3.0, 4.0]}, "non-numeric"),
        ({"inputs": [[1.0, 2.0, 3.0, 4.0], [1.0]]}, "ragged"),
        ({"inputs": []}, "empty batch"),
        ({"inputs": {"a": 1}}, "got a JSON dict"),
        ({"inputs": None}, "got a JSON null"),
        ({"input": [1.0, 2.0, 3.0, 4.0]}, "this field is required"),  # missing field
        ([1.0, 2.0, 3.0, 4.0], "this field is required"),  # not an object
    ],
)
def test_bad_inputs_get_a_400_that_states_the_expected_shape(blobs_task, viewer, client_for, body, got):
    task = blobs_task
    answer = _predict(client_for(viewer), task.slug, body)
    assert answer.status_code == 400, answer.content
    error = answer.json()["error"]
    assert error["code"] == "invalid_input"
    assert EXPECTED in error["message"] and got in error["message"], error["message"]
    assert error["details"] == {"expected_shape": [4], "max_batch": 1024}


def test_a_number_too_large_for_a_float_gets_a_400(blobs_task, viewer, client_for):
    task = blobs_task
    raw = '{"inputs": [[1, 2, 3, 4], [1e999, 0, 0, 0]]}'  # valid JSON; Python parses 1e999 as infinity
    answer = client_for(viewer).post(f"/api/tasks/{task.slug}/predict", raw, content_type="application/json")
    assert answer.status_code == 400
    message = answer.json()["error"]["message"]
    assert EXPECTED in message and "finite numbers" in message and "at index [1, 0]" in message


def test_an_oversized_batch_gets_a_400(blobs_task, viewer, client_for, settings):
    task = blobs_task
    settings.PLASTICITY_MAX_BATCH = 4
    answer = _predict(client_for(viewer), task.slug, {"inputs": blobs_inputs(5)})
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "inputs: expected shape [4] or [N, 4] with 1 ≤ N ≤ 4, got a batch of 5"
    assert _predict(client_for(viewer), task.slug, {"inputs": blobs_inputs(4)}).status_code == 200


@pytest.mark.parametrize("raw", ['{"inputs": [NaN, 1, 2, 3]}', '{"inputs": [Infinity, 1, 2, 3]}', "not json",
                                 '{"inputs": [1, 2, 3, 4]'])
def test_a_body_that_is_not_json_gets_a_400(blobs_task, viewer, client_for, raw):
    task = blobs_task
    answer = client_for(viewer).post(f"/api/tasks/{task.slug}/predict", raw, content_type="application/json")
    assert answer.status_code == 400, answer.content
    error = answer.json()["error"]
    assert error["code"] == "parse_error" and EXPECTED in error["message"], error


def test_a_body_of_another_media_type_gets_a_415_in_the_error_shape(blobs_task, viewer, client_for):
    task = blobs_task
    answer = client_for(viewer).post(f"/api/tasks/{task.slug}/predict", "1,2,3,4", content_type="text/csv")
    assert answer.status_code == 415
    assert answer.json()["error"]["code"] == "unsupported_media_type"


def test_predict_needs_authentication(blobs_task, client_for):
    task = blobs_task
    answer = _predict(client_for(None), task.slug, {"inputs": blobs_inputs(1)})
    assert answer.status_code in (401, 403)
    assert answer.json()["error"]["code"] == "not_authenticated"
    assert client_for(None).get("/api/ping").status_code in (401, 403)


def test_unknown_task_is_a_404(viewer, client_for):
    answer = _predict(client_for(viewer), "nope", {"inputs": [1.0]})
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"


def test_predict_is_throttled_with_the_predict_scope(blobs_task, viewer, client_for, settings):
    task = blobs_task
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
                                                          "predict": "2/min"}}
    cache.clear()
    client = client_for(viewer)
    codes = [_predict(client, task.slug, {"inputs": blobs_inputs(1)}).status_code for _ in range(3)]
    cache.clear()
    assert codes == [200, 200, 429]


def test_ping(viewer, client_for):
    assert client_for(viewer).get("/api/ping").json() == {"status": "ok"}


# ------------------------------------------------------------------------------ serving state


def test_viewers_read_the_serving_state_and_comparison(served_task, viewer, client_for):
    task, model, v1, v2 = served_task
    sample(task, score=0.95, p50=2.0)
    sample(task, version=v2, score=0.97, p50=0.4)
    _neural(task, v2)
    data = client_for(viewer).get(f"/api/tasks/{task.slug}/serving").json()
    assert data["state"]["implementation"] == "neural" and data["state"]["version"] == v2.number
    assert data["route"] == {"implementation": "neural", "version_id": v2.pk, "version": v2.number,
                             "runtime": "torch_fp32", "shadow_fraction": 0.0}
    comparison = data["comparison"]
    assert comparison["held_out"]["neural"]["score"] == 0.97
    assert comparison["held_out"]["algorithmic"]["latency_p50_ms"] == 2.0
    assert comparison["floor"] == pytest.approx(0.95 - task.score_tolerance)
    assert set(comparison["live"]) == {"neural", "algorithmic"}


def test_only_operators_force_an_implementation(served_task, viewer, operator, client_for):
    task, model, v1, v2 = served_task
    _neural(task, v2)
    url = f"/api/tasks/{task.slug}/serving"
    denied = client_for(viewer).post(url, {"implementation": "algorithmic"}, format="json")
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "permission_denied"
    assert ServingState.objects.get(task=task).implementation == NEURAL

    answer = client_for(operator).post(url, {"implementation": "algorithmic", "detail": "drift suspected"},
                                       format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["route"]["implementation"] == "algorithmic"
    state = ServingState.objects.get(task=task)
    assert (state.implementation, state.pinned, state.reason) == (ALGORITHMIC, True, SwitchReason.OPERATOR)
    switch = ServingSwitch.objects.filter(task=task).first()
    assert (switch.reason, switch.actor, switch.detail) == (SwitchReason.OPERATOR, "alice", "drift suspected")
    assert _predict(client_for(viewer), task.slug, {"inputs": blobs_inputs(1)}).json()["implementation"] == "algorithmic"

    answer = client_for(operator).post(url, {"implementation": "auto"}, format="json")
    assert answer.status_code == 200 and answer.json()["state"]["pinned"] is False


def test_forcing_neural_needs_an_active_version_of_the_task(served_task, operator, client_for):
    task, model, v1, v2 = served_task
    url = f"/api/tasks/{task.slug}/serving"
    refused = client_for(operator).post(url, {"implementation": "neural", "version_id": v1.pk}, format="json")
    assert refused.status_code == 400 and "not active" in refused.json()["error"]["message"]
    bad = client_for(operator).post(url, {"implementation": "sideways"}, format="json")
    assert bad.status_code == 400
    ok = client_for(operator).post(url, {"implementation": "neural"}, format="json")
    assert ok.status_code == 200 and ok.json()["state"]["version_id"] == v2.pk


def test_switches_are_listed_newest_first(served_task, viewer, client_for):
    task, model, v1, v2 = served_task
    _neural(task, v2)
    serving_switch(task=task, implementation=ALGORITHMIC, reason=SwitchReason.BELOW_FLOOR, evidence={"floor": 0.9})
    data = client_for(viewer).get("/api/serving/switches", {"task": task.slug}).json()
    rows = data["results"]
    assert [r["to_implementation"] for r in rows] == ["algorithmic", "neural"]
    assert rows[0]["reason"] == "below_floor" and rows[0]["evidence"] == {"floor": 0.9}
    assert rows[0]["from_version"] == v2.number and rows[1]["from_implementation"] == ""
    only = client_for(viewer).get("/api/serving/switches", {"reason": "operator"}).json()["results"]
    assert [r["reason"] for r in only] == ["operator"]


# ------------------------------------------------------------------------------ request bodies


def _npy(array) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def test_a_binary_npy_batch_is_answered_like_the_same_json(blobs_task, viewer, client_for):
    task = blobs_task
    client = client_for(viewer)
    inputs = np.asarray(blobs_inputs(7), dtype=np.float64)
    from_json = _predict(client, task.slug, {"inputs": inputs.tolist()})
    from_npy = client.post(f"/api/tasks/{task.slug}/predict", _npy(inputs), content_type="application/x-npy")
    assert from_npy.status_code == 200, from_npy.content
    assert from_npy.json()["outputs"] == from_json.json()["outputs"]
    assert from_npy.json()["batch_size"] == 7
    one = client.post(f"/api/tasks/{task.slug}/predict", _npy(inputs[0].astype(np.float32)),
                      content_type="application/x-npy")
    assert one.status_code == 200 and one.json()["batch_size"] == 1


@pytest.mark.parametrize(("body", "expected"), [
    (b"not an array", "not a NumPy .npy array"),
    (None, "not a NumPy .npy array"),  # a pickled object array: refused, never unpickled
])
def test_bad_npy_bodies_get_a_400(blobs_task, viewer, client_for, body, expected):
    task = blobs_task
    if body is None:
        body = _npy(np.array([{"a": 1}, None], dtype=object))
    answer = client_for(viewer).post(f"/api/tasks/{task.slug}/predict", body, content_type="application/x-npy")
    assert answer.status_code == 400
    assert expected in answer.json()["error"]["message"]


def test_a_npy_array_of_the_wrong_shape_or_kind_gets_the_input_check(blobs_task, viewer, client_for):
    task = blobs_task
    client = client_for(viewer)
    wrong = client.post(f"/api/tasks/{task.slug}/predict", _npy(np.zeros((3, 5))), content_type="application/x-npy")
    assert wrong.status_code == 400 and wrong.json()["error"]["message"] == f"inputs: {EXPECTED}, got [3, 5]"
    text = client.post(f"/api/tasks/{task.slug}/predict", _npy(np.array([["a"] * 4])),
                       content_type="application/x-npy")
    assert text.status_code == 400 and "got strings" in text.json()["error"]["message"]


def test_a_body_over_the_limit_gets_a_413_before_it_is_parsed(blobs_task, viewer, client_for, settings):
    task = blobs_task
    settings.PLASTICITY_PREDICT_MAX_BYTES = 2048
    client = client_for(viewer)
    small = _predict(client, task.slug, {"inputs": blobs_inputs(2)})
    assert small.status_code == 200
    big = _predict(client, task.slug, {"inputs": blobs_inputs(200)})
    assert big.status_code == 413
    error = big.json()["error"]
    assert error["code"] == "payload_too_large" and "2 KiB" in error["message"] and "application/x-npy" in error["message"]
    npy = client.post(f"/api/tasks/{task.slug}/predict", _npy(np.zeros((200, 4))), content_type="application/x-npy")
    assert npy.status_code == 413


def test_json_nested_thousands_deep_gets_a_400_in_the_error_shape(blobs_task, viewer, client_for):
    task = blobs_task
    raw = '{"inputs": ' + "[" * 5000 + "]" * 5000 + "}"
    answer = client_for(viewer).post(f"/api/tasks/{task.slug}/predict", raw, content_type="application/json")
    assert answer.status_code == 400
    assert "not valid JSON" in answer.json()["error"]["message"]


def test_an_integer_beyond_float_range_is_named_as_such(blobs_task, viewer, client_for):
    task = blobs_task
    raw = '{"inputs": [[1, 2, 3, ' + "1" + "0" * 400 + "]]}"
    answer = client_for(viewer).post(f"/api/tasks/{task.slug}/predict", raw, content_type="application/json")
    assert answer.status_code == 400
    assert "an integer too large for a float" in answer.json()["error"]["message"]


def test_deep_json_on_any_endpoint_gets_a_400_in_the_error_shape(blobs_task, operator, client_for):
    task = blobs_task
    raw = '{"implementation": ' + "[" * 5000 + "]" * 5000 + "}"
    answer = client_for(operator).post(f"/api/tasks/{task.slug}/serving", raw, content_type="application/json")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "parse_error"
