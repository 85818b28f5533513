"""The model page's download links: weights (safetensors) and ONNX of every version, served by the API."""

from __future__ import annotations

import hashlib
import re

import onnx
import pytest
from django.urls import reverse
from safetensors.torch import load

from models_registry.models import ModelVersion
from models_registry.nn.genome import build_module

pytestmark = pytest.mark.django_db


def _links(page: str, version: ModelVersion) -> dict[str, str]:
    row = re.search(rf'<tr data-version="{version.number}"[^>]*>(.*?)</tr>', page, re.S)
    assert row, f"no row for v{version.number}"
    return dict((kind, href) for href, kind in re.findall(r'<a href="([^"]+)" download data-download="(\w+)"',
                                                           row.group(1)))


def test_every_version_links_its_weights_and_onnx_and_they_download(history, viewer_client):
    page = viewer_client.get(reverse("panel:model", args=[history["model"].pk])).content.decode()
    for version in history["versions"]:
        links = _links(page, version)
        assert links == {"weights": f"/api/versions/{version.pk}/weights", "onnx": f"/api/versions/{version.pk}/onnx"}
    version = history["versions"][-1]
    weights = viewer_client.get(f"/api/versions/{version.pk}/weights")
    assert weights.status_code == 200
    body = b"".join(weights.streaming_content) if weights.streaming else weights.content
    assert hashlib.sha256(body).hexdigest() == version.weights_sha256
    assert set(load(body)) == set(build_module(version.genome).state_dict())  # the module's own tensors
    exported = viewer_client.get(f"/api/versions/{version.pk}/onnx")
    assert exported.status_code == 200
    model = onnx.load_model_from_string(b"".join(exported.streaming_content) if exported.streaming
                                        else exported.content)
    assert [i.name for i in model.graph.input] == ["input"]
    assert re.search(r'title="ONNX: exported from the fp32 weights"', page)


def test_a_version_without_files_says_so_instead_of_a_dead_link(history, viewer_client):
    version = history["versions"][0]
    ModelVersion.objects.filter(pk=version.pk).update(weights_file="", artifact_file="")
    page = viewer_client.get(reverse("panel:model", args=[history["model"].pk])).content.decode()
    assert _links(page, version) == {}
    row = re.search(rf'<tr data-version="{version.number}"[^>]*>(.*?)</tr>', page, re.S)
    assert row and "no weights file" in row.group(1) and "no ONNX export" in row.group(1)
    assert _links(page, history["versions"][1])  # the others keep theirs


def test_an_onnx_runtime_links_its_stored_artifact(history, viewer_client):
    version = history["versions"][-1]
    ModelVersion.objects.filter(pk=version.pk).update(runtime="onnx_fp32", artifact_file="stored.onnx")
    page = viewer_client.get(reverse("panel:model", args=[history["model"].pk])).content.decode()
    assert _links(page, version)["onnx"] == f"/api/versions/{version.pk}/onnx"
    assert 'title="ONNX: the stored ONNX Runtime fp32 model"' in page
