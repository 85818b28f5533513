"""The rest of the panel's controls in a real browser, each with JavaScript on and off: run a strategy
now, cancel a run, roll back, activate a version, pin and unpin serving, save the configuration.

Every effect is read back through the REST API with a token of its own (bob's, a viewer: what
any client would see), never only from the page's message. A viewer sees none of these
controls, and a forged post of each (with a valid CSRF token) is refused and changes nothing.
"""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token

from improvement.choices import RunStatus
from improvement.models import ImprovementRun
from models_registry.models import ModelVersion, NeuralModel
from models_registry.services import model_create
from tests.browser.conftest import login, wait_api
from tests.browser.seed import version_made
from tests.factories import csv_task

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def api(browser, live_url, viewer):
    """``api(path)``: the JSON of ``GET path``, authenticated with bob's token (no browser session)."""
    token = Token.objects.create(user=viewer).key
    context = browser.new_context(base_url=live_url, extra_http_headers={"Authorization": f"Token {token}"})

    def get(path: str) -> dict:
        response = context.request.get(path)
        assert response.ok, f"GET {path}: HTTP {response.status} {response.text()[:300]}"
        return response.json()

    yield get
    context.close()


def lineage(parents: list[int | None]) -> tuple[NeuralModel, list[ModelVersion]]:
    """A model whose versions v1… have the given parents (indexes into the list); the last is active."""
    model = model_create(task=csv_task("blobs", n=120), name="baseline")
    versions: list[ModelVersion] = []
    for i, parent in enumerate(parents):
        versions.append(version_made(model, score=0.6 + 0.05 * i, latency_ms=0.1, hidden=[4 + 4 * i],
                                     parent=versions[parent] if parent is not None else None))
    return model, versions


def submit(page, selector: str) -> None:
    """Click a control; without JavaScript, wait for the form post's redirect to load."""
    if page.js:
        page.click(selector)
    else:
        with page.expect_navigation():
            page.click(selector)


def active_number(api, model: NeuralModel) -> int:
    return api(f"/api/models/{model.pk}")["active_version"]["number"]


# ------------------------------------------------------------------------------ runs


def test_run_a_strategy_now(any_page, operator, api):
    page = any_page
    model, _ = lineage([None])
    assert api(f"/api/runs?model={model.pk}")["count"] == 0
    login(page, "alice", "alice-pass-123")
    page.goto("/config/")
    page.select_option("#run-now select[name=model]", str(model.pk))
    page.select_option("#run-now select[name=strategy]", "distillation")
    with page.expect_navigation(url=re.compile(r"/runs/\d+/$")):  # a plain form with or without script
        page.click('[data-control="run-now"]')
    run_id = int(re.search(r"/runs/(\d+)/$", page.url).group(1))
    run = api(f"/api/runs/{run_id}")
    assert (run["model"], run["strategy"], run["origin"], run["requested_by"], run["status"]) == (
        model.pk, "distillation", "operator", "alice", "queued")
    assert api(f"/api/runs?model={model.pk}")["count"] == 1
    assert page.locator(f'[data-run-status="{run_id}"]').first.inner_text() == "queued"
    assert page.errors == []


def test_cancel_a_run(any_page, operator, api):
    page = any_page
    model, versions = lineage([None])
    run = ImprovementRun.objects.create(model=model, strategy="training", baseline_version=versions[0])
    assert api(f"/api/runs/{run.pk}")["status"] == "queued"
    login(page, "alice", "alice-pass-123")
    page.goto(f"/runs/{run.pk}/")
    submit(page, '[data-control="cancel"]')
    wait_api(page, lambda: api(f"/api/runs/{run.pk}")["status"] == "cancelled", "the run cancelled")
    # The page says so, without its cancel button: redrawn in place with script, after the redirect without.
    page.wait_for_selector('[data-control="cancel"]', state="detached")
    assert page.locator(f'[data-run-status="{run.pk}"]').first.inner_text() == "cancelled"
    assert page.errors == []


# ------------------------------------------------------------------------------ versions


def test_roll_back(any_page, operator, api):
    page = any_page
    model, versions = lineage([None, 0, 0])  # v3's parent is v1: a rollback goes to v1, not v2
    assert active_number(api, model) == 3
    login(page, "alice", "alice-pass-123")
    page.goto(f"/models/{model.pk}/")
    assert page.locator('[data-control="rollback"]').inner_text() == "Roll back to v1"
    submit(page, '[data-control="rollback"]')
    wait_api(page, lambda: active_number(api, model) == 1, "v1 active after the rollback")
    page.wait_for_selector('[data-active-version="1"]')
    assert page.errors == []


def test_activate_a_version(any_page, operator, api):
    page = any_page
    model, versions = lineage([None, 0, 1])
    assert active_number(api, model) == 3
    login(page, "alice", "alice-pass-123")
    page.goto(f"/models/{model.pk}/")
    submit(page, 'tr[data-version="1"] [data-control="activate"]')  # not the rollback target (v2)
    wait_api(page, lambda: active_number(api, model) == 1, "v1 active")
    page.wait_for_selector('[data-active-version="1"]')
    assert page.locator('tr[data-version="3"] [data-control="activate"]').count() == 1
    assert page.errors == []


# ------------------------------------------------------------------------------ serving


def test_pin_and_unpin_serving(any_page, operator, api):
    page = any_page
    model, versions = lineage([None])
    task, version = model.task, versions[0]
    row = f"#task-{task.slug}"

    def serving() -> tuple:
        state = api(f"/api/tasks/{task.slug}/serving")["state"] or {}
        return state.get("implementation"), state.get("version_id"), state.get("pinned")

    def choose(value: str) -> None:
        if page.js:
            # A live event may redraw the row at any moment (serving.switched): choose and click in one
            # step, so the click never lands on a fresh copy that still shows the previous choice.
            page.evaluate("""([row, value]) => {
                const section = document.querySelector(row);
                section.querySelector("select[name=serve]").value = value;
                section.querySelector('[data-control="task-serving"]').click();
            }""", [row, value])
        else:
            page.select_option(f"#serve-{task.slug}", value)
            submit(page, f'{row} [data-control="task-serving"]')

    def row_shows(implementation: str, *, pinned: bool, choice: str) -> None:
        """The row says what serves and whether it is pinned (with script: once redrawn in place)."""
        page.wait_for_function("""([row, implementation, pinned, choice]) => {
            const section = document.querySelector(row);
            const badges = [...section.querySelectorAll(".badge")].map((b) => b.textContent.trim());
            return section.querySelector("[data-task-implementation]").textContent.trim() === implementation
                && badges.includes("pinned") === pinned && section.querySelector("select[name=serve]").value === choice;
        }""", arg=[row, implementation, pinned, choice])
        if page.js:
            assert page.evaluate("() => window.__sameDocument") is True, "the page was reloaded"

    login(page, "alice", "alice-pass-123")
    page.goto("/tasks/")
    if page.js:
        page.evaluate("() => { window.__sameDocument = true; }")
    before = serving()
    assert before[0] == "algorithmic" and not before[2]  # the weak neural version lost the initial decision

    choose(f"neural:{version.pk}")
    wait_api(page, lambda: serving() == ("neural", version.pk, True), "serving pinned to the neural version")
    row_shows("neural", pinned=True, choice=f"neural:{version.pk}")
    message = "#toast" if page.js else ".messages"
    assert f"{task.slug}: pinned to neural (baseline v1)." in page.locator(message).text_content()

    choose("algorithmic")
    wait_api(page, lambda: serving() == ("algorithmic", None, True), "serving pinned to the algorithm")
    row_shows("algorithmic", pinned=True, choice="algorithmic")

    choose("auto")
    wait_api(page, lambda: serving()[2] is False, "serving automatic again")
    row_shows(serving()[0], pinned=False, choice="auto")
    assert page.errors == []


# ------------------------------------------------------------------------------ configuration


def test_save_configuration(any_page, operator, api):
    page = any_page
    before = api("/api/config")
    interval = before["improvement_interval"] + 17
    login(page, "alice", "alice-pass-123")
    page.goto("/config/")
    page.fill("input[name=improvement_interval]", str(interval))
    page.set_checked("input[name=genetic_enhanced]", not before["genetic_enhanced"])
    with page.expect_navigation():  # a plain form with or without script
        page.click('[data-control="config-save"]')
    after = api("/api/config")
    assert after["improvement_interval"] == interval
    assert after["genetic_enhanced"] is (not before["genetic_enhanced"])
    assert after["max_concurrent_improvements"] == before["max_concurrent_improvements"]  # untouched fields kept
    assert "Configuration saved." in page.locator(".messages").inner_text()
    assert page.locator("input[name=improvement_interval]").input_value() == str(interval)
    assert page.errors == []


# ------------------------------------------------------------------------------ viewers


def test_a_viewer_sees_none_of_these_controls_and_a_forged_post_changes_nothing(page, viewer, api):
    model, versions = lineage([None, 0, 1])
    task = model.task
    run = ImprovementRun.objects.create(model=model, strategy="training", status=RunStatus.QUEUED)
    login(page, "bob", "bob-pass-123")
    for path in ["/config/", f"/runs/{run.pk}/", f"/models/{model.pk}/", "/tasks/"]:
        page.goto(path)
        assert page.locator("[data-control]").count() == 0, path
        assert page.locator("select[name=serve], [data-serving-control]").count() == 0, path
    page.goto("/config/")
    assert page.locator("#config-form fieldset[disabled]").count() == 2

    config, serving = api("/api/config"), api(f"/api/tasks/{task.slug}/serving")["state"]
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    forged = [
        (reverse("panel:run-now"), {"model": str(model.pk), "strategy": "training"}),
        (reverse("panel:run-cancel", args=[run.pk]), {}),
        (reverse("panel:model-rollback", args=[model.pk]), {}),
        (reverse("panel:model-activate", args=[model.pk]), {"version": str(versions[0].pk)}),
        (reverse("panel:task-serving", args=[task.slug]), {"serve": "algorithmic"}),
        (reverse("panel:config"), {"improvement_interval": str(config["improvement_interval"] + 5)}),
    ]
    for url, form in forged:
        response = page.request.post(url, form=form, headers={"X-CSRFToken": csrf})
        assert response.status == 403, (url, response.status)
    assert api(f"/api/runs?model={model.pk}")["count"] == 1
    assert api(f"/api/runs/{run.pk}")["status"] == "queued"
    assert active_number(api, model) == 3
    assert api(f"/api/tasks/{task.slug}/serving")["state"] == serving
    assert api("/api/config") == config
