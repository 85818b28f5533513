"""An uploaded task: its algorithm is measured by a worker, so serving moves to a better neural version at once.

The reported bug: predict kept serving the algorithm of an uploaded task with "no held-out
algorithmic score yet", because nothing had measured the algorithm. Here the upload goes
through the REST API, the data are a tilted linear rule over ten features (trees approximate
it with many small steps, a small MLP learns it), and the first neural version that beats the
algorithm on the gate split takes over predict as soon as it is activated. The upload answers
before the algorithm is measured; a worker measures it (``tests.jobs`` runs what the queue holds).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from models_registry.choices import ScoreSplit
from models_registry.models import PerformanceSample, Task
from models_registry.selectors import algorithm_latest_sample
from models_registry.services import model_create
from models_registry.serving.choices import SwitchReason
from models_registry.serving.models import ServingState, ServingSwitch
from tests.factories import trained_version
from tests.jobs import algorithm_evaluation_wait

pytestmark = pytest.mark.django_db

N_FEATURES = 10
MLP = {"kind": "mlp", "input_shape": [N_FEATURES], "output_dim": 2, "hidden": [32], "activation": "relu",
       "dropout": 0.0, "norm": "none"}


@pytest.fixture
def alice(operator) -> Iterator[APIClient]:
    """The operator with a token, as in tests/api (fresh throttle counters: uploads are rate-limited)."""
    cache.clear()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=operator)[0].key}")
    yield client
    cache.clear()


def _tilted_rule(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class = which side of a hyperplane through every feature a point lies on."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES))
    w = rng.normal(size=N_FEATURES)
    return x, (x @ w > 0).astype(np.int64)


def _csv(x: np.ndarray, y: np.ndarray) -> bytes:
    header = ",".join([f"f{i}" for i in range(N_FEATURES)] + ["side"])
    lines = [header] + [",".join(f"{v:.5f}" for v in row) + f",{'above' if label else 'below'}"
                        for row, label in zip(x, y, strict=True)]
    return ("\n".join(lines) + "\n").encode()


def _predict(client, slug: str, inputs: list) -> dict:
    answer = client.post(f"/api/tasks/{slug}/predict", {"inputs": inputs}, format="json")
    assert answer.status_code == 200, answer.content
    return answer.json()


def test_serving_switches_to_a_better_neural_version_of_an_uploaded_task(alice, django_capture_on_commit_callbacks):
    x, y = _tilted_rule(1000)
    upload = SimpleUploadedFile("tilted.csv", _csv(x, y))
    with django_capture_on_commit_callbacks(execute=True):  # the evaluation is queued on commit
        created = alice.post("/api/tasks", {"name": "Tilted", "slug": "tilted", "file": upload,
                                            "target_column": "side"}, format="multipart")
    assert created.status_code == 201, created.content
    assert created.json()["algorithm_evaluation"]["status"] == "pending"
    task = Task.objects.get(slug="tilted")
    assert task.algorithm_path == "models_registry.algorithms.GradientBoostingClassifier"  # a table

    # Measured by a worker: the gate sample serving compares with, and the sealed test sample.
    assert algorithm_evaluation_wait(alice, task.slug)["algorithm_evaluation"]["status"] == "done"
    algo = algorithm_latest_sample(task=task)
    assert algo is not None and algo.split == ScoreSplit.GATE and algo.latency_p50_ms is not None
    assert PerformanceSample.objects.filter(task=task, version=None, split=ScoreSplit.TEST).count() == 1

    inputs = x[:3].round(5).tolist()
    before = _predict(alice, task.slug, inputs)
    assert (before["implementation"], before["version_id"]) == ("algorithmic", None)

    model = model_create(task=task, name="mlp")
    with django_capture_on_commit_callbacks(execute=True):  # activation re-evaluates serving on commit
        version = trained_version(model, genome=MLP, epochs=60, measure=True, activate=True)
    margin = ServingState.objects.get(task=task).hysteresis
    assert version.score > algo.score + margin, (version.score, algo.score)  # better on the gate split

    state = ServingState.objects.get(task=task)
    assert (state.implementation, state.version_id) == ("neural", version.pk), state.detail
    assert "no held-out" not in state.detail
    first = ServingSwitch.objects.get(task=task)
    assert first.to_implementation == "neural" and first.evidence["algorithmic_score"] == algo.score
    assert state.reason == SwitchReason.INITIAL and "neural" in state.detail

    after = _predict(alice, task.slug, inputs)
    assert (after["implementation"], after["version_id"], after["version"]) == ("neural", version.pk, version.number)
