"""The rest of the operator's workspace in a real browser: the model list's filters, search and sort;
the download buttons of a model page; the footer's links to the API docs and the export; the 404
page and the favicon.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import onnxruntime
import pytest
import torch
from safetensors.numpy import load as load_safetensors

from improvement.models import ImprovementRun
from models_registry.implementations import task_dataset, version_module
from models_registry.models import ModelVersion, NeuralModel
from models_registry.services import model_create
from tests.browser.conftest import login
from tests.browser.seed import panel_history, version_made
from tests.factories import csv_task, version_with_score

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _model_rows(page) -> list[int]:
    """The model ids of the list's rows, top to bottom."""
    rows = page.locator("#models-table [data-model-row]")
    return [int(rows.nth(i).get_attribute("data-model-row")) for i in range(rows.count())]


def _apply(page) -> None:
    with page.expect_navigation(url=re.compile(r"/models/\?")):
        page.click('#list-filters [data-control="filter"]')


def test_the_model_list_filters_by_task_searches_by_name_and_sorts_by_a_header(page, viewer):
    blobs, waves = csv_task("blobs", n=120), csv_task("waves", n=120, seed=1)
    for task, name, score in [(blobs, "baseline", 0.61), (blobs, "wide-alpha", 0.83), (waves, "alpha", 0.72),
                              (waves, "deep", 0.55), (waves, "tiny", 0.90)]:
        version_with_score(model_create(task=task, name=name), score)
    login(page, "bob", "bob-pass-123")
    page.click('header nav a[href="/models/"]')
    page.wait_for_url("**/models/")
    assert sorted(_model_rows(page)) == sorted(NeuralModel.objects.values_list("pk", flat=True))

    # Filter by task with the form: only that task's models remain, and the filter is in the link.
    page.select_option("#id_task", "waves")
    _apply(page)
    assert parse_qs(urlsplit(page.url).query)["task"] == ["waves"]
    expected = set(NeuralModel.objects.filter(task=waves).values_list("pk", flat=True))
    assert set(_model_rows(page)) == expected and len(expected) == 3

    # Search by name within the task, then across every task.
    page.fill("#id_q", "alpha")
    _apply(page)
    assert _model_rows(page) == list(NeuralModel.objects.filter(task=waves, name="alpha").values_list("pk", flat=True))
    page.select_option("#id_task", "")
    _apply(page)
    expected = set(NeuralModel.objects.filter(name__icontains="alpha").values_list("pk", flat=True))
    assert set(_model_rows(page)) == expected and len(expected) == 2

    # Sort the whole list by gate score: best first, then (clicked again) worst first, as the database orders them.
    page.click("#list-filters a.reset")
    page.wait_for_url(re.compile(r"/models/$"))
    header = page.locator("#models-table thead a.sort", has_text="Gate score")
    with page.expect_navigation(url=re.compile(r"sort=-score")):
        header.click()
    by_score = list(ModelVersion.objects.filter(is_active=True).order_by("-score").values_list("model_id", flat=True))
    assert _model_rows(page) == by_score and len(by_score) == 5
    assert page.locator("#models-table th[aria-sort=descending]").inner_text().startswith("Gate score")
    with page.expect_navigation(url=re.compile(r"sort=score")):
        page.locator("#models-table thead a.sort", has_text="Gate score").click()
    assert _model_rows(page) == by_score[::-1]
    assert page.errors == []


def test_the_download_buttons_give_safetensors_weights_and_a_runnable_onnx_model(page, viewer):
    task = csv_task("blobs", n=180)
    model = model_create(task=task, name="baseline")
    bare = version_made(model, score=0.6, latency_ms=0.1, hidden=[8])
    version = version_made(model, score=0.8, latency_ms=0.2, hidden=[16, 8], parent=bare)
    ModelVersion.objects.filter(pk=bare.pk).update(weights_file="", artifact_file="")
    login(page, "bob", "bob-pass-123")
    page.goto(f"/models/{model.pk}/")
    row = page.locator(f'#versions tr[data-version="{version.number}"]')

    # The weights: the stored safetensors file, byte for byte, loaded as tensors (no pickle).
    with page.expect_download() as download_info:
        row.locator('[data-download="weights"]').click()
    download = download_info.value
    assert download.failure() is None
    assert download.suggested_filename == f"blobs-baseline-v{version.number}.safetensors"
    weights = Path(download.path()).read_bytes()
    assert hashlib.sha256(weights).hexdigest() == version.weights_sha256
    tensors = load_safetensors(weights)
    state = version_module(version).state_dict()
    assert set(tensors) == set(state)
    for name, tensor in state.items():
        np.testing.assert_array_equal(tensors[name], tensor.numpy())

    # The ONNX export runs in ONNX Runtime and answers as the version's own module does.
    with page.expect_download() as download_info:
        row.locator('[data-download="onnx"]').click()
    download = download_info.value
    assert download.failure() is None
    assert download.suggested_filename == f"blobs-baseline-v{version.number}.onnx"
    session = onnxruntime.InferenceSession(Path(download.path()).read_bytes(), providers=["CPUExecutionProvider"])
    inputs = task_dataset(task).gate[0][:16].astype(np.float32)
    (outputs,) = session.run(None, {session.get_inputs()[0].name: inputs})
    with torch.inference_mode():
        expected = version_module(version).eval()(torch.from_numpy(inputs)).numpy()
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-5)

    # A version without files offers no link, and says so.
    bare_row = page.locator(f'#versions tr[data-version="{bare.number}"]')
    assert bare_row.locator("a[data-download]").count() == 0
    assert "no ONNX export" in bare_row.locator('[data-download="none"]').inner_text()
    assert "no weights file" in bare_row.inner_text()
    assert page.errors == []


def test_the_footer_opens_the_api_docs_redoc_and_the_export_without_leaving_the_host(page, viewer, live_url):
    panel_history()
    own = urlsplit(live_url).netloc
    requests: list[str] = []
    refused: set[str] = set()  # stopped inside the browser by the page's Content-Security-Policy: never sent
    page.on("request", lambda request: requests.append(request.url))
    page.on("requestfailed", lambda request: refused.add(request.url) if request.failure == "csp" else None)
    login(page, "bob", "bob-pass-123")

    with page.expect_navigation() as navigation:
        page.click('footer.site-footer a:text-is("docs (Swagger)")')
    assert navigation.value.status == 200 and urlsplit(page.url).path == "/api/docs/"
    page.wait_for_function("() => document.querySelector('.swagger-ui .info .title') !== null")
    assert "Plasticity API" in page.inner_text(".swagger-ui .info .title")
    assert page.locator(".swagger-ui .opblock").count() > 10  # the schema loaded: every operation is listed

    page.go_back()
    with page.expect_navigation() as navigation:
        page.click('footer.site-footer a:text-is("ReDoc")')
    assert navigation.value.status == 200 and urlsplit(page.url).path == "/api/redoc/"
    page.get_by_role("heading", name=re.compile("Plasticity API")).first.wait_for()

    page.go_back()
    runs = set(ImprovementRun.objects.values_list("pk", flat=True))
    with page.expect_download() as download_info:
        page.click('footer.site-footer a[data-export="csv"]')
    text = Path(download_info.value.path()).read_text()
    assert {int(row["id"]) for row in csv.DictReader(io.StringIO(text))} == runs
    with page.expect_download() as download_info:
        page.click('footer.site-footer a[data-export="json"]')
    assert {row["id"] for row in json.loads(Path(download_info.value.path()).read_text())} == runs

    page.wait_for_load_state("networkidle")
    foreign = sorted({url for url in requests if not url.startswith(("data:", "blob:")) and urlsplit(url).netloc != own}
                     - refused)
    assert foreign == []
    assert any("/static/drf_spectacular_sidecar/swagger-ui-dist/" in url for url in requests)
    assert any("/static/drf_spectacular_sidecar/redoc/" in url for url in requests)
    assert page.errors == []


def test_an_unknown_address_gets_the_styled_404_and_the_favicon_resolves(page, viewer):
    login(page, "bob", "bob-pass-123")
    response = page.goto("/no-such-page")
    assert response.status == 404
    assert page.locator("#error-page .error-code").inner_text() == "404"
    assert "/no-such-page" in page.inner_text("#error-page")
    assert page.locator('header nav a[href="/models/"]').is_visible()  # the panel's own navigation
    # panel.css applies: the top bar is its flex row (a bare page would leave the header a block).
    assert page.evaluate("() => getComputedStyle(document.querySelector('header.topbar')).display") == "flex"
    with page.expect_navigation():
        page.click('#error-page a[data-link="home"]')
    assert urlsplit(page.url).path == "/"

    response = page.goto("/favicon.ico")
    assert response.ok and response.headers["content-type"].startswith("image/")
    assert response.request.redirected_from is not None  # the site's static icon, not a page at that path
    page.goto("/")
    for selector in ('link[rel="icon"]', 'link[rel="alternate icon"]'):
        href = page.get_attribute(selector, "href")
        loaded = page.evaluate("""async (href) => {
            const response = await fetch(href);
            const image = new Image();
            const decoded = await new Promise((resolve) => {
                image.onload = () => resolve(true);
                image.onerror = () => resolve(false);
                image.src = href;
            });
            return {status: response.status, type: response.headers.get("content-type"), decoded};
        }""", href)
        assert loaded["status"] == 200 and loaded["type"].startswith("image/") and loaded["decoded"], (href, loaded)
    assert page.errors == []
