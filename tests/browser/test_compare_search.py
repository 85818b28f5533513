"""In a real browser: comparing two versions from the model page (JavaScript on and off), and an
architecture run's search views drawn by the vendored Plotly bundle (Optuna's figures, hover text only).

Screenshots: docs/screenshots/compare.png and search.png.
"""

from __future__ import annotations

import re

import pytest
from django.db import transaction

from events.publisher import publish
from improvement.choices import RunStatus
from improvement.models import ImprovementRun
from improvement.runs.lifecycle import run_payload
from models_registry.implementations import task_dataset
from models_registry.services import model_create
from tests.browser.conftest import SCREENSHOTS, login, wait_charts, wait_live
from tests.browser.seed import curve
from tests.factories import MLP, csv_task, trained_version, version_with_score
from tests.panel.test_search_views import TRIALS, search_run

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_two_ticked_versions_are_compared_and_one_links_to_the_active(any_page, viewer):
    page = any_page
    task = csv_task("blobs", n=180)
    model = model_create(task=task, name="m")
    first = trained_version(model, genome={**MLP, "hidden": [8]}, epochs=3, measure=True)
    second = trained_version(model, genome={**MLP, "hidden": [32]}, epochs=8, seed=1, parent=first, measure=True)
    n_gate = len(task_dataset(task).gate[1])
    login(page, "bob", "bob-pass-123")
    page.goto(f"/models/{model.pk}/")
    page.check(f'input[name="v"][value="{first.pk}"]')
    page.check(f'input[name="v"][value="{second.pk}"]')
    with page.expect_navigation(url=re.compile(rf"/models/compare/\?a={first.pk}&b={second.pk}$")):
        page.click("[data-compare-submit]")
    assert page.locator('tr.diff[data-genome-key="hidden"]').is_visible()
    for side in ("a", "b"):
        counts = [int(page.locator(f"#cm-{side} td[data-cm]").nth(i).get_attribute("data-cm"))
                  for i in range(page.locator(f"#cm-{side} td[data-cm]").count())]
        assert sum(counts) == n_gate
    if page.js:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "compare.png"), full_page=True)

    page.goto(f"/models/{model.pk}/")
    with page.expect_navigation(url=re.compile(rf"/models/compare/\?a={second.pk}&b={first.pk}$")):
        page.click(f'[data-compare-active="{first.number}"]')
    assert page.locator("#cm-a").is_visible()
    assert page.errors == []


def test_search_views_draw_every_trial_and_a_queued_run_says_no_data(page, viewer):
    model = model_create(task=csv_task("blobs", n=120), name="m")
    version_with_score(model, 0.7)
    run = search_run(model, status=RunStatus.REJECTED)
    login(page, "bob", "bob-pass-123")
    page.goto(f"/runs/{run.pk}/")
    wait_charts(page, 4)
    assert page.locator("#run-curves .js-plotly-plot").count() == 4
    assert page.locator("#curve-chart").count() == 0
    pareto = page.locator('[data-figure="search-pareto"]')
    assert pareto.locator(".scatterlayer .point").count() == len(TRIALS)
    assert pareto.locator(".textpoint").count() == 0  # hover text, no labels to overlap
    parallel = page.locator('[data-figure="search-parallel"]')
    assert parallel.locator(".scatterlayer .trace .js-line").count() >= len(TRIALS)
    page.wait_for_timeout(300)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "search.png"), full_page=True)

    queued = ImprovementRun.objects.create(model=model, strategy="training", status=RunStatus.QUEUED)
    page.goto(f"/runs/{queued.pk}/")
    assert page.locator("#run-curves [data-no-data]").is_visible()
    assert page.locator("#run-curves .js-plotly-plot").count() == 0
    assert page.errors == []


def test_a_queued_run_gets_its_curve_chart_live_and_the_chart_then_grows_in_place(page, viewer):
    model = model_create(task=csv_task("blobs", n=120), name="m")
    version_with_score(model, 0.7)
    run = ImprovementRun.objects.create(model=model, strategy="training", status=RunStatus.QUEUED)
    login(page, "bob", "bob-pass-123")
    page.goto(f"/runs/{run.pk}/")
    wait_live(page)
    assert page.locator("#run-curves [data-no-data]").is_visible()
    points = curve(8)

    def progress(upto: int) -> None:
        with transaction.atomic():
            ImprovementRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, curve=points[:upto])
            run.refresh_from_db()
            publish("run.progress", {**run_payload(run, message="training"), "points": points[upto - 4:upto]})

    progress(4)  # the first points: no chart on the page yet, the section is fetched again
    page.wait_for_selector("#curve-chart .main-svg", timeout=30_000)
    assert page.locator("#run-curves [data-no-data]").count() == 0
    assert page.locator("#curve-chart").get_attribute("data-curve-len") == "4"
    page.evaluate("() => { window.__sameDocument = true; }")
    progress(8)  # then the chart is extended where it is
    page.wait_for_function("() => document.getElementById('curve-chart').dataset.curveLen === '8'")
    assert page.evaluate("() => document.getElementById('curve-chart').data[0].x.length") == 8
    assert page.evaluate("() => window.__sameDocument") is True
    assert page.errors == []
