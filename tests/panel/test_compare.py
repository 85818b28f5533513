"""The compare page: two versions of one task side by side, each run on the gate split.

Actors: alice (operator), bob (viewer), an anonymous visitor. Scores are checked against the
project's own gate evaluation and the versions' stored records, not against fixed numbers.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from models_registry.evaluation import gate_evaluate
from models_registry.implementations import task_dataset, version_predict_fn
from models_registry.services import model_create, task_create_from_upload
from project.panel import selectors_compare
from tests.factories import MLP, csv_task, trained_version

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def pair():
    """Two versions of a three-class task whose genomes differ in one key (the hidden widths)."""
    task = csv_task("blobs", n=240)
    model = model_create(task=task, name="m")
    first = trained_version(model, seed=0)
    second = trained_version(model, genome={**MLP, "hidden": [32]}, seed=1, parent=first)
    return task, first, second


def compare_url(a, b) -> str:
    return f"{reverse('panel:compare')}?a={a.pk}&b={b.pk}"


def values_task_pair():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 3))
    y = X @ np.array([1.5, -2.0, 0.5]) + 0.1 * rng.normal(size=200)
    lines = ["a,b,c,target"] + [",".join(f"{v:.5f}" for v in row) + f",{t:.5f}" for row, t in zip(X, y, strict=True)]
    task = task_create_from_upload(name="linear", filename="linear.csv", content=("\n".join(lines) + "\n").encode(),
                                   output_kind="values")
    model = model_create(task=task, name="m")
    genome = {**MLP, "input_shape": [3], "output_dim": 1}
    first = trained_version(model, genome=genome, seed=0)
    second = trained_version(model, genome={**genome, "activation": "gelu"}, seed=1, parent=first)
    return task, first, second


def test_the_page_shows_both_scores_and_highlights_the_changed_genome_key(pair, viewer_client):
    task, first, second = pair
    response = viewer_client.get(compare_url(first, second))
    assert response.status_code == 200
    html = response.content.decode()
    for side, version in (("a", first), ("b", second)):
        # The gate score computed now, by running the version, is the one the gate recorded for it.
        expected = gate_evaluate(task, version_predict_fn(version), measure=False).score
        assert version.score == pytest.approx(expected)
        shown = re.search(rf'data-score="gate-{side}">([0-9.]+)<', html).group(1)
        assert shown == f"{expected:.4f}"
        assert re.search(rf'data-score="test-{side}">([0-9.]+)<', html).group(1) == f"{version.test_score:.4f}"
        assert re.search(rf'data-score="val-{side}">[0-9.]+<', html)
    diff = response.context["genome_diff"]
    assert [row["key"] for row in diff["changed"]] == ["hidden"]
    assert {"activation", "kind", "norm"} <= {row["key"] for row in diff["same"]}
    assert '<tr class="diff" data-genome-key="hidden">' in html
    assert 'data-genome-key="activation"' not in html and 'data-genome-same="activation"' in html


def test_the_confusion_matrix_sums_to_the_gate_rows_scored(pair, operator_client):
    task, first, second = pair
    html = operator_client.get(compare_url(first, second)).content.decode()
    n_gate = min(selectors_compare.ROWS_CAP, len(task_dataset(task).gate[1]))
    for side, version in (("a", first), ("b", second)):
        table = re.search(rf'<table class="confusion" id="cm-{side}".*?</table>', html, re.S).group(0)
        counts = [int(c) for c in re.findall(r'data-cm="(\d+)"', table)]
        assert len(counts) == task.n_outputs ** 2
        assert sum(counts) == n_gate
        hits = [int(c) for c in re.findall(r'data-cm="(\d+)" class="hit"', table)]
        assert len(hits) == task.n_outputs
        assert sum(hits) / n_gate == pytest.approx(version.score)  # accuracy: the diagonal over the rows
        per_class = re.search(rf'id="per-class-{side}".*?</table>', html, re.S).group(0)
        supports = [int(s) for s in re.findall(r"<td>(\d+)</td></tr>", per_class)]
        assert sum(supports) == n_gate


def test_a_values_task_gets_a_residual_plot_of_the_gate_rows(viewer_client):
    task, first, second = values_task_pair()
    response = viewer_client.get(compare_url(first, second))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="cm-a"' not in html and 'id="residuals-a"' in html and 'id="residuals-b"' in html
    X_gate, y_gate = task_dataset(task).gate
    for side, version in ((response.context["a"], first), (response.context["b"], second)):
        trace = side["residual_figure"]["data"][0]
        assert len(trace["x"]) == len(trace["y"]) == len(y_gate)
        predicted = np.asarray(version_predict_fn(version)(np.asarray(X_gate, dtype=np.float32))).reshape(-1)
        np.testing.assert_allclose(trace["x"], predicted, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(trace["y"], y_gate.reshape(-1) - predicted, rtol=1e-4, atol=1e-4)
        assert side["gate"]["mae"] == pytest.approx(float(np.abs(y_gate.reshape(-1) - predicted).mean()), rel=1e-4)


def test_versions_of_different_tasks_are_refused_with_a_message(pair, viewer_client):
    _, first, _ = pair
    other = trained_version(model_create(task=csv_task("other", seed=1), name="m"))
    response = viewer_client.get(compare_url(first, other))
    assert response.status_code == 400
    html = response.content.decode()
    assert "belong to different tasks" in html and "data-refused" in html
    assert 'id="cm-a"' not in html
    assert cache.get(selectors_compare.compare_cache_key(a=first, b=other)) is None  # nothing was run


def test_unknown_or_malformed_ids_are_404_and_a_missing_side_is_refused(pair, viewer_client):
    _, first, second = pair
    url = reverse("panel:compare")
    assert viewer_client.get(f"{url}?a={first.pk}&b=999999").status_code == 404
    assert viewer_client.get(f"{url}?a=abc&b={second.pk}").status_code == 404
    assert viewer_client.get(f"{url}?a={first.pk}").status_code == 400
    assert viewer_client.get(f"{url}?a={first.pk}&b={first.pk}").status_code == 400


def test_the_ticked_checkboxes_redirect_to_the_pair_and_the_model_page_links_to_it(pair, viewer_client):
    _, first, second = pair
    url = reverse("panel:compare")
    response = viewer_client.get(f"{url}?v={first.pk}&v={second.pk}")
    assert response.status_code == 302 and response["Location"] == f"{url}?a={first.pk}&b={second.pk}"
    assert viewer_client.get(f"{url}?v={first.pk}").status_code == 400
    model_page = viewer_client.get(reverse("panel:model", args=[first.model_id])).content.decode()
    assert model_page.count('form="compare-form"') == 2 and 'id="compare-form"' in model_page
    # the active version is the second: the first row links to the pair
    assert f'href="{url}?a={second.pk}&amp;b={first.pk}" data-compare-active="{first.number}"' in model_page


def test_anonymous_visitors_are_sent_to_the_login_page(pair):
    _, first, second = pair
    response = Client().get(compare_url(first, second))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=")


def test_a_second_load_reads_the_cache_and_runs_no_version(pair, viewer_client, monkeypatch):
    _, first, second = pair
    key = selectors_compare.compare_cache_key(a=first, b=second)
    assert cache.get(key) is None
    html = viewer_client.get(compare_url(first, second)).content.decode()
    cached = cache.get(key)
    assert set(cached) == {str(first.pk), str(second.pk)}
    assert cached[str(first.pk)]["splits"]["gate"]["score"] == pytest.approx(first.score)

    def no_inference(version):
        raise AssertionError(f"v{version.number} was run again")

    monkeypatch.setattr(selectors_compare, "version_predict_fn", no_inference)
    again = viewer_client.get(compare_url(first, second))
    assert again.status_code == 200
    shown = re.search(r'data-score="gate-a">([0-9.]+)<', html).group(1)
    assert re.search(r'data-score="gate-a">([0-9.]+)<', again.content.decode()).group(1) == shown
    swapped = viewer_client.get(compare_url(second, first))  # the same pair the other way round
    assert swapped.status_code == 200
    assert re.search(r'data-score="gate-b">([0-9.]+)<', swapped.content.decode()).group(1) == shown
