"""POST /api/tasks/<slug>/rows and GET /api/tasks/<slug>/datasets: codes, the error shape, idempotence,
who may append, the upload allowance, and the body limit of the path."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from models_registry.models import DatasetVersion, Task
from project.middleware import request_body_limit
from tests.factories import blobs_csv, csv_task

pytestmark = pytest.mark.django_db

MIB = 2**20


@pytest.fixture
def task() -> Task:
    return csv_task()


def _append(client, content: bytes, *, slug: str = "blobs", filename: str = "more.csv", **headers):
    return client.post(f"/api/tasks/{slug}/rows", {"file": SimpleUploadedFile(filename, content)}, format="multipart",
                       **{f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()})


def test_an_append_answers_201_then_200_for_a_retry(alice, task):
    content = blobs_csv(n=60, seed=2)
    response = _append(alice, content, **{"Idempotency-Key": "nightly-2026-12-07"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["created"] is True and body["number"] == 2 and body["parent_number"] == 1 and body["source"] == "append"
    assert (body["rows_added"], body["rows_total"], body["row_range"]) == (60, 300, [240, 300])
    assert body["n_train"] + body["n_val"] + body["n_gate"] + body["n_test"] == 300
    assert body["idempotency_key"] == "nightly-2026-12-07" and body["created_by"] == "alice"
    retry = _append(alice, content, **{"Idempotency-Key": "nightly-2026-12-07"})
    assert retry.status_code == 200 and retry.json() == {**body, "created": False}
    assert _append(alice, content).status_code == 200  # the same file without a key: also once
    task.refresh_from_db()
    assert task.n_samples == 300 and alice.get("/api/tasks/blobs").json()["n_samples"] == 300


def test_a_reused_key_with_another_file_is_a_409(alice, task):
    assert _append(alice, blobs_csv(n=60, seed=2), **{"Idempotency-Key": "k"}).status_code == 201
    response = _append(alice, blobs_csv(n=60, seed=3), **{"Idempotency-Key": "k"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict" and "already appended another file" in \
        response.json()["error"]["message"]
    assert DatasetVersion.objects.filter(task=task).count() == 2


def test_a_malformed_row_is_a_400_in_the_error_shape_naming_row_and_column(alice, task):
    content = b"f0,f1,f2,f3,label\n1,2,3,4,c0\n1,2,3,4,c1\n1,2,x,4,c2\n"
    response = _append(alice, content)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_dataset"
    assert error["message"].startswith("row 4, column 3 ('f2'): the value is 'x', not a number")
    assert error["details"] == {"file": [error["message"]]}
    unknown = _append(alice, b"f0,f1,f2,f3,label\n1,2,3,4,c0\n1,2,3,4,dog\n").json()["error"]
    assert "row 3, column 5 ('label'): the class label 'dog' is not one of the task's classes" in unknown["message"]
    buffer = io.BytesIO()
    np.savez(buffer, X=np.zeros((3, 5)), y=np.zeros(3))
    shape = _append(alice, buffer.getvalue(), filename="rows.npz").json()["error"]
    assert shape["details"] == {"file": ["X: rows have shape [5]; the task's inputs have shape [4]"]}
    missing = alice.post("/api/tasks/blobs/rows", {}, format="multipart").json()["error"]
    assert missing["code"] == "required" and "file" in missing["details"]
    task.refresh_from_db()
    assert task.n_samples == 240 and DatasetVersion.objects.filter(task=task).count() == 1


def test_only_operators_append_and_anyone_logged_in_lists_versions(alice, bob, anon, task):
    assert _append(anon, blobs_csv(n=30, seed=2)).status_code == 401
    assert _append(bob, blobs_csv(n=30, seed=2)).status_code == 403
    assert _append(alice, blobs_csv(n=30, seed=2), slug="nope").status_code == 404
    assert _append(alice, blobs_csv(n=30, seed=2)).status_code == 201
    assert anon.get("/api/tasks/blobs/datasets").status_code == 401
    listed = bob.get("/api/tasks/blobs/datasets")
    assert listed.status_code == 200
    body = listed.json()
    assert body["count"] == 2 and [v["number"] for v in body["results"]] == [2, 1]
    assert body["results"][1]["source"] == "creation" and body["results"][1]["parent_number"] is None
    assert body["results"][1]["created_by"] is None and body["results"][0]["created_by"] == "alice"


def test_refused_appends_do_not_use_the_upload_allowance(alice, task, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK,
                               "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
                                                          "upload": "2/hour"}}
    for _ in range(4):
        assert _append(alice, b"f0,f1\n1,2\n").status_code == 400
    assert _append(alice, blobs_csv(n=30, seed=2)).status_code == 201
    assert _append(alice, blobs_csv(n=30, seed=3)).status_code == 201
    response = _append(alice, blobs_csv(n=30, seed=4))
    assert response.status_code == 429 and response.json()["error"]["code"] == "throttled"
    assert alice.get("/api/tasks/blobs/datasets").status_code == 200  # reads are not in the upload scope


def test_the_rows_path_takes_an_upload_sized_body(settings, alice, task):
    assert request_body_limit("/api/tasks/blobs/rows") == request_body_limit("/api/tasks") > 20 * MIB
    assert request_body_limit("/tasks/blobs/rows") == request_body_limit("/api/tasks")  # the panel's form
    assert request_body_limit("/api/tasks/blobs/datasets") == settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    response = alice.post("/api/tasks/blobs/rows", b"x", content_type="multipart/form-data; boundary=b",
                          CONTENT_LENGTH=str(request_body_limit("/api/tasks") + 1))
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
