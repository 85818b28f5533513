"""Models and versions over the API: creation with an initial genome, downloads, activation, rollback."""

from __future__ import annotations

import hashlib

import numpy as np
import onnxruntime as ort
import pytest
import torch
from django.core.files.storage import default_storage
from safetensors.numpy import load as safetensors_load

from models_registry.choices import Runtime
from models_registry.evaluation import candidate_evaluate
from models_registry.implementations import task_dataset, version_module
from models_registry.models import ModelVersion, NeuralModel
from models_registry.nn.runtimes import export_onnx
from models_registry.selectors import version_active
from models_registry.services import version_create
from tests.factories import MLP, csv_task, model_with_versions

pytestmark = pytest.mark.django_db


def test_create_a_model_trains_and_activates_its_initial_version(alice):
    task = csv_task(n=120)
    response = alice.post("/api/models", {"task": task.slug, "name": "Small Net", "genome": MLP}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "small-net" and body["task"] == task.slug and body["n_versions"] == 1
    model = NeuralModel.objects.get(pk=body["id"])
    assert version_active(model=model).pk == body["active_version"]["id"]
    assert version_active(model=model).genome["hidden"] == MLP["hidden"]


@pytest.mark.parametrize(
    ("genome", "message"),
    [
        ({**MLP, "input_shape": [5]}, "input_shape must be the task's [4]"),
        ({**MLP, "output_dim": 7}, "output_dim must be the task's n_outputs (3)"),
        ({**MLP, "kind": "rnn"}, "kind"),
        ({"kind": "autoencoder", "input_shape": [4], "code_dim": 2}, "needs a supervised kind"),
        ("not an object", "must be a JSON object"),
    ],
)
def test_bad_genomes_are_400_and_create_nothing(alice, genome, message):
    task = csv_task(n=80)
    response = alice.post("/api/models", {"task": task.slug, "name": "m", "genome": genome}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert "genome" in error["details"] and message in str(error["details"]["genome"])
    assert not NeuralModel.objects.exists()


def test_a_duplicate_model_name_is_a_400(alice):
    model, _ = model_with_versions(1)
    response = alice.post("/api/models", {"task": model.task.slug, "name": "m", "genome": MLP}, format="json")
    assert response.status_code == 400
    assert "already has a model named 'm'" in response.json()["error"]["message"]


def test_models_and_versions_are_listed_and_filtered(bob):
    model, versions = model_with_versions(2)
    listing = bob.get("/api/models", {"task": model.task.slug}).json()
    assert listing["count"] == 1 and listing["results"][0]["active_version"]["number"] == 2
    page = bob.get("/api/versions", {"model": model.pk}).json()
    assert [v["number"] for v in page["results"]] == [2, 1]
    assert bob.get("/api/versions", {"model": model.pk, "is_active": "true"}).json()["count"] == 1
    detail = bob.get(f"/api/versions/{versions[0].pk}").json()
    assert detail["genome"] == versions[0].genome and detail["weights_sha256"] == versions[0].weights_sha256
    assert "weights_file" not in detail  # storage paths are not the client's business
    assert bob.get("/api/versions/999999").json()["error"]["code"] == "not_found"


def test_weights_download_is_the_verified_safetensors_file(bob):
    model, (v1,) = model_with_versions(1)
    response = bob.get(f"/api/versions/{v1.pk}/weights")
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="{model.task.slug}-m-v1.safetensors"'
    assert hashlib.sha256(response.content).hexdigest() == v1.weights_sha256 == response["X-Content-SHA256"]
    tensors = safetensors_load(response.content)
    assert set(tensors) == set(version_module(v1).state_dict())


def test_a_tampered_weights_file_is_never_served(bob):
    _, (v1,) = model_with_versions(1)
    with default_storage.open(v1.weights_file, "wb") as handle:
        handle.write(b"\x80\x04 definitely a pickle")
    response = bob.get(f"/api/versions/{v1.pk}/weights")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "integrity_error"
    assert b"pickle" not in response.content.split(b'"message"')[0]


def test_onnx_download_is_exported_from_the_weights_and_runs(bob):
    model, (v1,) = model_with_versions(1)
    response = bob.get(f"/api/versions/{v1.pk}/onnx", HTTP_ACCEPT="application/octet-stream")
    assert response.status_code == 200
    assert response["Content-Disposition"].endswith('-v1.onnx"')
    session = ort.InferenceSession(response.content, providers=["CPUExecutionProvider"])
    X, _ = task_dataset(model.task).gate
    (out,) = session.run(None, {session.get_inputs()[0].name: X.astype(np.float32)})
    with torch.no_grad():
        expected = version_module(v1)(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_onnx_runtime_versions_serve_their_stored_artifact(bob):
    model, (v1,) = model_with_versions(1)
    module = version_module(v1)
    onnx_bytes = export_onnx(module, v1.genome["input_shape"])
    v2 = version_create(model=model, genome=v1.genome, state_dict=module.state_dict(), runtime=Runtime.ONNX_FP32,
                        onnx_bytes=onnx_bytes, evaluation=candidate_evaluate(task=model.task, module=module),
                        parent=v1)
    response = bob.get(f"/api/versions/{v2.pk}/onnx")
    assert response.status_code == 200
    assert response.content == onnx_bytes and response["X-Content-SHA256"] == v2.artifact_sha256


def test_activate_and_rollback(alice):
    model, (v1, v2) = model_with_versions(2)
    response = alice.post(f"/api/models/{model.pk}/rollback", {"reason": "live accuracy dropped"}, format="json")
    assert response.status_code == 200 and response.json()["number"] == 1
    model.refresh_from_db()
    assert version_active(model=model).pk == v1.pk
    response = alice.post(f"/api/versions/{v2.pk}/activate", {}, format="json")
    assert response.status_code == 200 and response.json()["is_active"] is True
    assert ModelVersion.objects.get(pk=v1.pk).is_active is False
    response = alice.post(f"/api/models/{model.pk}/rollback", {"to_version": v1.pk}, format="json")
    assert response.status_code == 200 and ModelVersion.objects.get(pk=v1.pk).is_active


def test_rollback_refusals(alice):
    model, (v1,) = model_with_versions(1)
    response = alice.post(f"/api/models/{model.pk}/rollback", {}, format="json")
    assert response.status_code == 400
    assert "has no earlier version" in response.json()["error"]["message"]
    response = alice.post(f"/api/models/{model.pk}/rollback", {"to_version": 999999}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"to_version": [f"to_version: model {model} has no version "
                                                                  "with id 999999"]}
    model.refresh_from_db()
    assert version_active(model=model).pk == v1.pk
