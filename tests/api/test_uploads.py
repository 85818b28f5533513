"""Task creation over the API: CSV/NPZ uploads and generator specs; refusals leave nothing behind."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.handlers.wsgi import WSGIRequest
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from rest_framework.authtoken.models import Token

from models_registry.api.views import TaskViewSet
from models_registry.data.splits import make_splits
from models_registry.datasets import dataset_load
from models_registry.models import Task, TaskCreationJob
from project.api.uploads import BODY_OVERHEAD_BYTES, LimitedUploadHandler
from tests.factories import blobs_csv
from tests.jobs import job_wait

pytestmark = pytest.mark.django_db


def _upload(client, content: bytes, filename: str = "data.csv", **fields):
    return client.post("/api/tasks", {"name": "Uploaded", "file": SimpleUploadedFile(filename, content), **fields},
                       format="multipart")


def _stored_datasets() -> list[str]:
    if not default_storage.exists("datasets"):
        return []
    return default_storage.listdir("datasets")[1]


def assert_nothing_left_behind():
    assert Task.objects.count() == 0
    assert _stored_datasets() == []
    assert TaskCreationJob.objects.count() == 0  # a refused generator task is not even queued


def _csv(header: str, rows: list[str]) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


# ------------------------------------------------------------------------------- accepted


def test_csv_upload_creates_a_task_with_fixed_splits(alice):
    response = _upload(alice, blobs_csv(n=120), target_column="label", slug="blobs-api")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["slug"] == "blobs-api" and body["source"] == "upload" and body["output_kind"] == "classes"
    assert body["n_train"] + body["n_val"] + body["n_gate"] + body["n_test"] == body["n_samples"] == 120
    assert body["class_labels"] == ["c0", "c1", "c2"]
    task = Task.objects.get(slug="blobs-api")
    assert len(_stored_datasets()) == 1 and task.dataset_file.startswith("datasets/")
    assert alice.get("/api/tasks/blobs-api").json()["dataset_sha256"] == task.dataset_sha256


def test_split_seed_gives_the_split_make_splits_gives(alice):
    """A chosen seed reproduces the split outside Plasticity; another seed gives another split."""
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(200, 1, 4, 4)).astype(np.float32), np.arange(200) % 4
    buffer = io.BytesIO()
    np.savez(buffer, X=X, y=y)
    stored = {}
    for seed in (7, 8):
        response = _upload(alice, buffer.getvalue(), filename="images.npz", slug=f"seeded-{seed}", split_seed=seed)
        assert response.status_code == 201, response.content
        assert response.json()["split_seed"] == seed
        task = Task.objects.get(slug=f"seeded-{seed}")
        stored[seed] = dataset_load(task.dataset_file, sha256=task.dataset_sha256).splits
        expected = make_splits(200, y=y, stratify=True, seed=seed)
        for split in ("train", "val", "gate", "test"):
            np.testing.assert_array_equal(stored[seed][split], expected[split])
    assert not np.array_equal(stored[7]["test"], stored[8]["test"])
    refused = _upload(alice, buffer.getvalue(), filename="images.npz", slug="seeded-bad", split_seed=-1)
    assert refused.status_code == 400 and "split_seed" in json.dumps(refused.json()["error"])


def test_npz_upload_keeps_image_shapes(alice):
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(buffer, X=rng.normal(size=(80, 1, 4, 4)).astype(np.float32), y=np.arange(80) % 2)
    response = _upload(alice, buffer.getvalue(), filename="images.npz")
    assert response.status_code == 201, response.content
    assert response.json()["input_shape"] == [1, 4, 4]


def test_generator_task_from_json(root, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = root.post("/api/tasks", {
            "name": "Squares", "algorithm_path": "tests.api.helpers.sum_of_squares",
            "sampler_spec": {"shape": [3], "distribution": "uniform", "low": -1, "high": 1, "n_samples": 200},
        }, format="json")
    assert response.status_code == 202, response.content  # labelled by a worker, not in the request
    with django_capture_on_commit_callbacks(execute=True):
        job = job_wait(root, response["Location"])
    assert job["status"] == "done" and job["task"] == "squares", job
    task = root.get("/api/tasks/squares").json()
    assert task["source"] == "generator" and task["output_kind"] == "values"
    assert Task.objects.get(slug="squares").sampler_spec["n_samples"] == 200


def test_generator_refusals_name_the_problem(root):
    response = root.post("/api/tasks", {"name": "Bad", "algorithm_path": "tests.no.such.module",
                                        "sampler_spec": {"shape": [3]}}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_implementation"
    response = root.post("/api/tasks", {"name": "Bad", "algorithm_path": "tests.api.helpers.sum_of_squares",
                                         "sampler_spec": {"shape": [0]}}, format="json")
    assert response.status_code == 400
    assert "sampler.shape" in response.json()["error"]["message"]
    assert_nothing_left_behind()


def test_a_duplicate_slug_is_a_400_and_keeps_one_dataset(alice):
    assert _upload(alice, blobs_csv(n=80)).status_code == 201
    response = _upload(alice, blobs_csv(n=80))
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"slug": ["slug: a task named 'uploaded' already exists"]}
    assert Task.objects.count() == 1 and len(_stored_datasets()) == 1


# ------------------------------------------------------------------------------- refused

ROWS = [f"{i * 0.5},{-i},{'ab'[i % 2]}" for i in range(40)]


@pytest.mark.parametrize(
    ("content", "filename", "fields", "message"),
    [
        pytest.param("a,b,label\n1,2,caf\u00e9\n".encode("latin-1") + _csv("x", ROWS)[2:], "data.csv", {},
                     "not UTF-8", id="latin-1"),
        pytest.param(_csv("a,b,label", [*ROWS[:5], "1,2", *ROWS[5:]]), "data.csv", {},
                     "row 7 has 2 fields, expected 3", id="ragged-row"),
        pytest.param(_csv("a,b,label", [*ROWS[:3], "nan,1,a", *ROWS[3:]]), "data.csv", {},
                     "not a finite number", id="nan"),
        pytest.param(_csv("a,b,label", [r[:-1] + "a" for r in ROWS]), "data.csv", {},
                     "single class", id="one-class"),
        pytest.param(_csv(",".join(f"c{i}" for i in range(1001)), [",".join(["1"] * 1001)] * 25), "data.csv", {},
                     "too many columns", id="too-many-columns"),
        pytest.param(_csv("a,b,label", ROWS), "data.txt", {}, "expected a .csv or .npz file", id="extension"),
        pytest.param(_csv("a,b,label", ROWS), "data.csv", {"target_column": "nope"}, "is not in the header",
                     id="target-column"),
        pytest.param(b"", "data.csv", {}, "empty", id="empty"),
    ],
)
def test_bad_uploads_are_400_with_a_clear_message_and_leave_nothing(alice, content, filename, fields, message):
    response = _upload(alice, content, filename=filename, **fields)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert message in json.dumps(error), error
    assert_nothing_left_behind()


def test_pickled_npz_is_refused(alice):
    buffer = io.BytesIO()
    np.savez(buffer, X=np.array([{"a": 1}] * 30, dtype=object), y=np.arange(30) % 2)
    response = _upload(alice, buffer.getvalue(), filename="evil.npz")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_dataset"
    assert_nothing_left_behind()


def test_too_many_rows_is_a_400(alice, settings):
    settings.PLASTICITY_UPLOAD_MAX_ROWS = 30
    response = _upload(alice, _csv("a,b,label", ROWS))
    assert response.status_code == 400
    assert "too many rows: at most 30" in response.json()["error"]["message"]
    assert_nothing_left_behind()


def test_viewer_upload_is_refused_and_leaves_nothing(bob):
    response = _upload(bob, blobs_csv(n=80))
    assert response.status_code == 403
    assert_nothing_left_behind()


# --------------------------------------------------------------------------- size limits


class CountingStream(io.BytesIO):
    """A wsgi.input that records how many body bytes the server read."""

    def read(self, size=-1):
        data = super().read(size)
        self.bytes_read = getattr(self, "bytes_read", 0) + len(data)
        return data

    def readline(self, size=-1):
        data = super().readline(size)
        self.bytes_read = getattr(self, "bytes_read", 0) + len(data)
        return data


def _raw_upload(user, content: bytes, *, content_length: int | None = None):
    """POST a multipart upload through the view with a body stream that counts what is read."""
    body = encode_multipart(BOUNDARY, {"name": "Big", "file": SimpleUploadedFile("big.csv", content)})
    stream = CountingStream(body)
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/api/tasks", "SERVER_NAME": "testserver", "SERVER_PORT": "80",
        "wsgi.input": stream, "wsgi.url_scheme": "http", "CONTENT_TYPE": MULTIPART_CONTENT,
        "CONTENT_LENGTH": str(content_length if content_length is not None else len(body)),
        "HTTP_AUTHORIZATION": f"Token {Token.objects.get_or_create(user=user)[0].key}",
    }
    response = TaskViewSet.as_view({"post": "create", "get": "list"})(WSGIRequest(environ))
    response.render()
    return response, stream, len(body)


def test_oversized_upload_is_413_before_a_byte_of_the_body_is_read(operator, settings):
    settings.PLASTICITY_UPLOAD_MAX_BYTES = 4096
    response, stream, total = _raw_upload(operator, b"x" * (BODY_OVERHEAD_BYTES + 10_000))
    assert response.status_code == 413
    error = json.loads(response.content)["error"]
    assert error["code"] == "payload_too_large" and "the limit is 4 KiB" in error["message"]
    assert getattr(stream, "bytes_read", 0) == 0 < total
    assert_nothing_left_behind()


def test_upload_larger_than_declared_is_stopped_while_streaming(operator, settings, monkeypatch):
    """Content-Length within the allowance, file over the limit: the handler stops reading early."""
    settings.PLASTICITY_UPLOAD_MAX_BYTES = 4096
    monkeypatch.setattr(LimitedUploadHandler, "chunk_size", 1024)
    response, stream, total = _raw_upload(operator, b"y" * 40_000)
    assert response.status_code == 413
    assert "the limit is 4 KiB" in json.loads(response.content)["error"]["message"]
    assert stream.bytes_read < 10_000 < total
    assert_nothing_left_behind()


def test_the_limit_applies_when_the_csrf_check_parses_the_body_first(operator, settings):
    """A session user's CSRF check reads request.POST before DRF parses: still refused early."""
    settings.PLASTICITY_UPLOAD_MAX_BYTES = 4096
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    client.get("/accounts/login/")
    response = client.post("/api/tasks", {"name": "Big", "file": SimpleUploadedFile("big.csv", b"z" * 100_000)},
                           HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert_nothing_left_behind()


def test_a_file_just_under_the_limit_is_accepted(alice, settings):
    content = blobs_csv(n=80)
    settings.PLASTICITY_UPLOAD_MAX_BYTES = max(1024, len(content))
    assert _upload(alice, content).status_code == 201


def test_uploads_are_throttled_by_their_own_scope(alice, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
                                                          "upload": "2/hour"}}
    for _ in range(5):  # refused uploads do not use the allowance: mistakes do not lock anyone out
        assert _upload(alice, b"").status_code == 400
    assert _upload(alice, blobs_csv(n=80), slug="first").status_code == 201
    assert _upload(alice, blobs_csv(n=80), slug="second").status_code == 201
    response = _upload(alice, blobs_csv(n=80), slug="third")
    assert response.status_code == 429 and response.json()["error"]["code"] == "throttled"
    assert int(response["Retry-After"]) > 0
    assert alice.get("/api/tasks").status_code == 200  # reads are not in the upload scope
    assert set(Task.objects.values_list("slug", flat=True)) == {"first", "second"}


# ------------------------------------------------------------------------- gate size and metric


def test_an_upload_too_small_for_a_gate_is_refused_with_the_size_needed(alice):
    response = _upload(alice, blobs_csv(n=50))
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "gate split" in message and "at least 10" in message and "67 rows" in message
    assert not Task.objects.exists() and _stored_datasets() == []


def test_a_small_upload_is_accepted_with_the_smallest_detectable_gain(alice):
    response = _upload(alice, blobs_csv(n=200), slug="smallish")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["n_gate"] == 30 and len(body["warnings"]) == 1
    assert "smallest accuracy gain the promotion gate can detect is 16.7%" in body["warnings"][0]
    large = _upload(alice, blobs_csv(n=2000, seed=1), slug="large")
    assert large.status_code == 201 and large.json()["warnings"] == []


def test_the_metric_is_chosen_at_creation_and_checked(alice):
    response = _upload(alice, blobs_csv(n=200), slug="f1", metric="macro_f1")
    assert response.status_code == 201 and response.json()["metric"] == "macro_f1"
    refused = _upload(alice, blobs_csv(n=200), slug="auc", metric="roc_auc")  # three classes
    message = refused.json()["error"]["message"]
    assert refused.status_code == 400 and "metric: expected one of accuracy, balanced_accuracy, macro_f1 " in message
    assert not Task.objects.filter(slug="auc").exists()


def test_class_count_errors_name_the_labels_as_written(alice):
    rows = ["a,b,label"] + [f"{i},{i % 7},cat" for i in range(40)] + [f"{i},{i % 5},dog" for i in range(40)]
    rows += ["1,2,rare bird", "3,4,rare bird"]
    response = _upload(alice, ("\n".join(rows) + "\n").encode())
    assert response.status_code == 400
    assert "too few rows for class 'rare bird' (2 rows)" in response.json()["error"]["message"]
    assert_nothing_left_behind()


def test_a_semicolon_csv_gets_a_delimiter_hint(alice):
    rows = ["a;b;label"] + [f"{i};{i % 7};{i % 2}" for i in range(40)]
    response = _upload(alice, ("\n".join(rows) + "\n").encode())
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "holding semicolons" in message and "separated by commas" in message
