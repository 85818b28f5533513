"""The task page's dataset versions and its append form: with the page's script (JSON) and without it
(a redirect, or the page again with the error under the file input). Actors: alice (operator), bob (viewer)."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from models_registry.models import DatasetVersion
from tests.factories import blobs_csv, csv_task

pytestmark = pytest.mark.django_db

BAD_ROWS = b"f0,f1,f2,f3,label\n1,2,3,4,c0\n1,2,3,4,c7\n"


@pytest.fixture
def task():
    return csv_task()


def _post(client, content: bytes, *, script: bool, filename: str = "more.csv"):
    headers = {"HTTP_ACCEPT": "application/json"} if script else {}
    return client.post(reverse("panel:task-rows", args=["blobs"]), {"file": SimpleUploadedFile(filename, content)},
                       **headers)


def test_the_task_page_lists_dataset_versions_and_offers_the_form_to_operators(task, operator_client, viewer_client):
    page = operator_client.get(reverse("panel:tasks")).content.decode()
    assert 'data-datasets="blobs"' in page and 'data-dataset-version="1"' in page and "Task creation" in page
    assert 'data-control="append-rows"' in page and 'enctype="multipart/form-data"' in page
    assert reverse("panel:task-rows", args=["blobs"]) in page
    viewer_page = viewer_client.get(reverse("panel:tasks")).content.decode()
    assert 'data-dataset-version="1"' in viewer_page and "data-control=" not in viewer_page
    assert _post(viewer_client, blobs_csv(n=30, seed=2), script=True).status_code == 403
    assert DatasetVersion.objects.filter(task=task).count() == 1


def test_the_form_appends_with_the_script_and_the_page_shows_the_new_version(task, operator_client):
    response = _post(operator_client, blobs_csv(n=30, seed=2), script=True)
    assert response.status_code == 201
    assert response.json() == {"ok": True, "message": "blobs: dataset v2, 30 rows added (270 in all).", "version": 2,
                               "created": True}
    again = _post(operator_client, blobs_csv(n=30, seed=2), script=True)
    assert again.status_code == 200 and again.json()["created"] is False and "nothing added" in again.json()["message"]
    page = operator_client.get(reverse("panel:tasks")).content.decode()
    assert 'data-dataset-version="2"' in page and "+30" in page and "[240, 270)" in page and "alice" in page
    version = DatasetVersion.objects.get(task=task, number=2)
    assert version.created_by.get_username() == "alice"


def test_a_refusal_is_shown_in_place_with_the_script(task, operator_client):
    response = _post(operator_client, BAD_ROWS, script=True)
    assert response.status_code == 400
    body = response.json()
    assert body["ok"] is False and "row 3, column 5 ('label'): the class label 'c7'" in body["message"]
    assert body["errors"] == {"file": [body["message"]]}
    assert DatasetVersion.objects.filter(task=task).count() == 1


def test_without_the_script_success_redirects_and_a_refusal_renders_the_error_under_the_input(task, operator_client):
    refused = _post(operator_client, BAD_ROWS, script=False)
    assert refused.status_code == 400
    html = refused.content.decode()
    assert "the class label &#x27;c7&#x27; is not one of the task&#x27;s classes" in html
    assert 'data-form-error>' in html and '<details class="datasets" data-datasets="blobs" open>' in html
    accepted = _post(operator_client, blobs_csv(n=30, seed=2), script=False)
    assert accepted.status_code == 302 and accepted["Location"] == reverse("panel:tasks") + "#task-blobs"
    page = operator_client.get(accepted["Location"]).content.decode()
    assert "blobs: dataset v2, 30 rows added (270 in all)." in page and 'data-dataset-version="2"' in page
    no_file = operator_client.post(reverse("panel:task-rows", args=["blobs"]), {})
    assert no_file.status_code == 400 and "choose a .csv or .npz file" in no_file.content.decode()
