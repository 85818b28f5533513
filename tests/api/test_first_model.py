"""No genome needed: every new task gets a first model built from its data's shape, and improving starts."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django_q.models import OrmQ

from improvement.models import ImprovementConfig, ImprovementRun
from improvement.scheduler.loop import cycle_after_run, loop_start
from improvement.services import model_bootstrap as bootstrap_service
from models_registry.models import NeuralModel
from models_registry.selectors import version_active
from tests.factories import blobs_csv

pytestmark = pytest.mark.django_db


def _upload(client, content: bytes, filename: str, **fields):
    return client.post("/api/tasks", {"name": filename.split(".")[0], "file": SimpleUploadedFile(filename, content),
                                      **fields}, format="multipart")


def model_bootstrap(model_id: int, genome: dict | None = None) -> str:
    """The worker's task, without the connection hand-off a worker process needs."""
    done = bootstrap_service(model=NeuralModel.objects.get(pk=model_id), genome=genome)
    cycle_after_run()
    return done


def _npz(X: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, X=X, y=y)
    return buffer.getvalue()


def test_an_uploaded_table_gets_a_first_model_that_a_worker_trains_and_the_loop_improves(
        alice, django_capture_on_commit_callbacks):
    ImprovementConfig.objects.update_or_create(pk=1, defaults={"run_time_budget_s": 5})
    loop_start()
    with django_capture_on_commit_callbacks(execute=True):
        response = _upload(alice, blobs_csv(n=300), "tabular.csv")
    assert response.status_code == 201, response.content
    (first,) = response.json()["models"]
    model = NeuralModel.objects.get(pk=first["id"])
    assert model.name == "auto" and not model.versions.exists()
    assert OrmQ.objects.count() >= 1  # the bootstrap is queued for a worker, not trained in the request

    done = model_bootstrap(model.pk)  # what the worker runs (improvement.tasks.model_bootstrap)
    version = version_active(model=model)
    assert version is not None and version.genome["kind"] == "mlp" and "v1" in done
    assert version.score is not None and version.test_score is not None
    assert ImprovementRun.objects.filter(model=model).exists(), "the loop started improving it at once"
    assert model_bootstrap(model.pk).endswith("has versions already")  # a second delivery does nothing


@pytest.mark.parametrize(
    ("X", "kind"),
    [(np.random.default_rng(0).normal(size=(200, 64)).astype(np.float32), "conv1d"),
     (np.random.default_rng(0).normal(size=(200, 1, 12, 12)).astype(np.float32), "cnn")],
    ids=["signal", "image"],
)
def test_the_first_genome_follows_the_kind_of_input(alice, X, kind):
    response = _upload(alice, _npz(X, np.arange(len(X)) % 4), f"{kind}.npz")
    assert response.status_code == 201, response.content
    model = NeuralModel.objects.get(pk=response.json()["models"][0]["id"])
    model_bootstrap(model.pk)
    genome = version_active(model=model).genome
    assert genome["kind"] == kind and genome["input_shape"] == list(X.shape[1:]) and genome["output_dim"] == 4


def test_a_given_genome_is_fitted_to_the_task_and_a_wrong_one_is_said_so(alice, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        good = _upload(alice, blobs_csv(n=300), "given.csv", genome='{"kind": "mlp", "hidden": [24]}')
    assert good.status_code == 201, good.content
    model = NeuralModel.objects.get(pk=good.json()["models"][0]["id"])
    model_bootstrap(model.pk, {"kind": "mlp", "input_shape": [4], "output_dim": 3, "hidden": [24]})
    assert version_active(model=model).genome["hidden"] == [24]

    wrong = _upload(alice, blobs_csv(n=300, seed=1), "wrong.csv", genome='{"kind": "cnn", "channels": [8]}')
    assert wrong.status_code == 201
    assert any(w.startswith("genome: kind: must be one of mlp, transformer") for w in wrong.json()["warnings"])
