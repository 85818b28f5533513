"""The run page of an architecture search: its trials drawn (Optuna's figures), not an empty training chart;
a run with nothing to draw yet says so.

Trials are ``SearchCandidate`` rows made here by hand, so each figure's points can be counted.
"""

from __future__ import annotations

import re

import pytest
from django.core.cache import cache
from django.urls import reverse

from improvement.choices import RunStatus
from improvement.models import ImprovementRun, SearchCandidate
from models_registry.services import model_create
from project.panel import charts
from project.panel.search_charts import PARALLEL_AXES, SearchTrial, pareto_front_indices, search_views
from tests.browser.seed import curve
from tests.factories import MLP, csv_task, version_with_score

pytestmark = pytest.mark.django_db

# (family, hidden width, lr, validation score, p50 latency ms, parameters)
TRIALS = [
    ("mlp", 16, 1e-3, 0.71, 0.20, 150), ("mlp", 64, 3e-3, 0.83, 0.35, 600),
    ("transformer", 32, 5e-4, 0.78, 1.10, 9000), ("mlp", 128, 2e-3, 0.86, 0.60, 2000),
    ("transformer", 64, 8e-3, 0.80, 2.00, 30000), ("mlp", 32, 1e-2, 0.64, 0.15, 300),
]


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def model():
    model = model_create(task=csv_task("blobs", n=120), name="m")
    version_with_score(model, 0.7)
    return model


def genome(family: str, width: int) -> dict:
    if family == "transformer":
        return {"kind": "transformer", "input_shape": [4], "output_dim": 3, "tokens": "features", "d_model": width,
                "heads": 2, "layers": 1, "ff_dim": 2 * width, "pooling": "mean", "hidden": [], "norm": "layer",
                "activation": "gelu", "dropout": 0.1}
    return {**MLP, "hidden": [width]}


def search_run(model, *, trials=TRIALS, failed: int = 1, running: int = 1,
               status: str = RunStatus.RUNNING) -> ImprovementRun:
    run = ImprovementRun.objects.create(model=model, strategy="architecture", status=status,
                                        baseline_version=model.versions.get(is_active=True))
    index = 0
    for family, width, lr, score, latency, params in trials:
        SearchCandidate.objects.create(
            run=run, generation=index // 2, index=index, trial_number=index, genome=genome(family, width),
            train_params={"lr": lr, "batch_size": 64 if index % 2 else 128, "epochs": 20, "augment": "none"},
            status=SearchCandidate.Status.DONE, score=score, latency_ms=latency, n_parameters=params, seconds=1.0)
        index += 1
    for _ in range(failed):
        SearchCandidate.objects.create(run=run, generation=9, index=index, trial_number=index,
                                       genome=genome("mlp", 512), train_params={"lr": 1e-3, "batch_size": 32},
                                       status=SearchCandidate.Status.FAILED, error="RuntimeError: diverged")
        index += 1
    for _ in range(running):
        SearchCandidate.objects.create(run=run, generation=9, index=index, trial_number=index,
                                       genome=genome("mlp", 16), train_params={"lr": 1e-3, "batch_size": 32},
                                       status=SearchCandidate.Status.RUNNING)
        index += 1
    return run


def test_an_architecture_run_draws_one_point_per_scored_trial_instead_of_a_training_curve(model, viewer_client):
    run = search_run(model)
    response = viewer_client.get(reverse("panel:run", args=[run.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="curve-chart"' not in html and 'id="curve-figure"' not in html
    for name in ("search-history", "search-pareto", "search-parallel", "search-importance"):
        assert f'id="{name}"' in html and f'data-figure="{name}"' in html
    search = response.context["search"]
    n = len(TRIALS)
    assert (search["n_done"], search["n_failed"], search["n_waiting"]) == (n, 1, 1)

    history = {t["name"]: t for t in search["history"]["data"]}
    assert sorted(history["validation score"]["x"]) == list(range(n))  # candidate indices; the failed one is left out
    assert sorted(history["validation score"]["y"]) == sorted(t[3] for t in TRIALS)
    assert history["best so far"]["y"][-1] == max(t[3] for t in TRIALS)

    markers = [t for t in search["pareto"]["data"] if t["mode"] == "markers"]
    assert sum(len(t["x"]) for t in markers) == n
    assert sorted(x for t in markers for x in t["x"]) == sorted(t[4] for t in TRIALS)
    assert all("text" not in t.get("mode", "") for t in search["pareto"]["data"])  # hover text, no labels

    lines = [t for t in search["parallel"]["data"] if t.get("mode") == "lines"]
    assert len(lines) == n
    bars = search["importance"]["data"][0]
    assert {"family", "lr", "batch_size"} <= set(bars["y"])  # a categorical parameter among them
    assert sum(bars["x"]) == pytest.approx(1.0)

    # Ten parameters vary; the axes are the score and the eight that matter most: every ranked one
    # (those all trials share), then the conditional ones.
    axes = search["parallel"]["layout"]["xaxis"]["ticktext"]
    assert axes[0] == "score" and len(axes) == 1 + PARALLEL_AXES
    assert set(bars["y"]) <= set(axes) and search["parallel_axes"] == (PARALLEL_AXES, 10)
    assert html.count('<tr data-trial="') == n


def test_the_pareto_front_of_a_hand_made_set():
    # (index, latency, score): 2 is beaten by 1 (faster and better), 5 by 1 (as good, slower), 6 failed.
    points = [(0, 1.0, 0.50), (1, 2.0, 0.70), (2, 3.0, 0.60), (3, 0.5, 0.40), (4, 4.0, 0.90), (5, 2.5, 0.70)]
    trials = [SearchTrial(index=i, status=SearchCandidate.Status.DONE, score=s, latency_ms=lat, n_parameters=10 * (i + 1),
                          params={"family": "mlp", "width": 8 * (i + 1)}) for i, lat, s in points]
    trials.append(SearchTrial(index=6, status=SearchCandidate.Status.FAILED, score=None, latency_ms=None,
                              n_parameters=None, params={"family": "mlp", "width": 99}))
    assert pareto_front_indices(trials) == [0, 1, 3, 4]
    assert sorted(points[i][0] for i in charts.pareto_front([(p[1], p[2]) for p in points])) == [0, 1, 3, 4]
    views = search_views(trials)
    assert views["front"] == [0, 1, 3, 4]
    front = next(t for t in views["pareto"]["data"] if t["name"] == "Pareto front")
    assert sorted(front["x"]) == [0.5, 1.0, 2.0, 4.0]
    assert sorted(int(re.match(r"trial (\d+)", text).group(1)) for text in front["text"]) == [0, 1, 3, 4]


def test_importance_needs_two_scored_trials(model, viewer_client):
    run = search_run(model, trials=TRIALS[:1], failed=2, running=0, status=RunStatus.REJECTED)
    response = viewer_client.get(reverse("panel:run", args=[run.pk]))
    search = response.context["search"]
    assert (search["n_done"], search["n_failed"]) == (1, 2)
    assert search["importance"] is None and "at least 2 scored trials" in search["importance_note"]
    html = response.content.decode()
    assert 'id="search-importance"' not in html and "at least 2 scored trials" in html
    assert len(search["history"]["data"][0]["x"]) == 1

    two = search_run(model, trials=TRIALS[:2], failed=0, running=0, status=RunStatus.REJECTED)
    assert viewer_client.get(reverse("panel:run", args=[two.pk])).context["search"]["importance"] is not None


def test_a_queued_run_shows_no_data_instead_of_an_empty_chart(model, viewer_client):
    queued = ImprovementRun.objects.create(model=model, strategy="training", status=RunStatus.QUEUED)
    html = viewer_client.get(reverse("panel:run", args=[queued.pk])).content.decode()
    assert "data-no-data" in html and "No data yet" in html
    assert 'id="curve-chart"' not in html and 'id="curve-figure"' not in html

    search = ImprovementRun.objects.create(model=model, strategy="architecture", status=RunStatus.QUEUED)
    html = viewer_client.get(reverse("panel:run", args=[search.pk])).content.decode()
    assert "data-no-data" in html and "Architecture search" in html
    assert 'id="curve-chart"' not in html and 'id="search-history"' not in html

    for strategy, status in (("training", RunStatus.RUNNING), ("architecture", RunStatus.PROMOTED)):
        # A run with a curve shows it: a search that recorded no trials (an older run) included.
        trained = ImprovementRun.objects.create(model=model, strategy=strategy, status=status, curve=curve(12))
        html = viewer_client.get(reverse("panel:run", args=[trained.pk])).content.decode()
        assert 'id="curve-chart"' in html and 'data-curve-len="12"' in html, strategy
        assert "data-no-data" not in html and "Architecture search" not in html, strategy
