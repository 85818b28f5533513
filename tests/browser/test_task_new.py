"""New task in a real browser with JavaScript on: the file input uploads at once and the preview
appears without a reload, the target's detected kind and the metrics that suit it follow the
choice, and the created task's page shows its first model, then that model's first version live.

The web tier runs no worker: what the request does (the task, its first model, the queued
training) is checked through the API and the queue; the worker's part, the first version's
training, is run here, and the page shows it through its live events."""

from __future__ import annotations

import numpy as np
import pytest
from django_q.models import OrmQ

from improvement.services import BOOTSTRAP_TASK, model_bootstrap
from models_registry.models import NeuralModel, Task
from tests.browser.conftest import SCREENSHOTS, login, wait_live

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

#: Generous: nothing here measures time, it only stops a test that would hang.
DEADLINE_MS = 120_000


def graded_csv(n: int = 90) -> str:
    """x1, x2, grade (0/1/2, detected as classes), x3 (a number: detected as values, the default target)."""
    rng = np.random.default_rng(7)
    grade = np.arange(n) % 3
    x1 = grade * 2.0 + rng.normal(0, 0.4, n)
    x2 = rng.normal(0, 1, n)
    x3 = x1 - x2
    rows = [f"{a:.3f},{b:.3f},{g},{c:.3f}" for a, b, g, c in zip(x1, x2, grade, x3, strict=True)]
    return "\n".join(["x1,x2,grade,x3", *rows]) + "\n"


def test_upload_preview_choose_and_land_on_the_new_task(page, operator, tmp_path):
    data = graded_csv()
    path = tmp_path / "graded_rows.csv"
    path.write_text(data)
    login(page, "alice", "alice-pass-123")
    page.goto("/tasks/")
    page.click('[data-link="task-new"]')
    page.wait_for_url("**/tasks/new/")
    page.evaluate("() => { window.__sameDocument = true; }")

    page.set_input_files("#task-new-file", str(path))  # choosing the file uploads it
    page.wait_for_selector('[data-preview-row="9"]')
    assert page.evaluate("() => window.__sameDocument") is True, "the preview came without a reload"
    assert "/tasks/new/?upload=" in page.url  # a reload would show the same preview
    assert page.locator("[data-preview-row]").count() == 10
    assert page.locator('[data-preview-row="0"] td').all_inner_texts() == data.splitlines()[1].split(",")
    assert page.locator('[data-column-type="grade"]').inner_text() == "integer · 3 distinct · as target: classes"

    kind_auto = page.locator('#id_output_kind option[value=""]')
    assert kind_auto.inner_text() == "Detected: values"  # x3, the last column, by default
    assert page.locator('#id_metric option[value="macro_f1"]').is_disabled()
    page.select_option("#id_target_column", "grade")
    assert kind_auto.inner_text() == "Detected: classes"
    assert page.locator('#id_metric option[value="r2"]').is_disabled()
    assert page.locator('#id_metric option[value="roc_auc"]').is_disabled()  # three classes: not binary
    page.select_option("#id_metric", "macro_f1")
    page.fill("#id_name", "Graded rows")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "task-new.png"), full_page=True)

    page.click('[data-control="task-create"]')
    page.wait_for_url("**/tasks/graded-rows/")
    row = page.locator('tr[data-implementation="neural"]')
    row.wait_for(timeout=DEADLINE_MS)
    assert "auto" in row.inner_text() and "no active version yet" in row.inner_text()
    assert "Task graded-rows created" in page.locator(".messages").inner_text()

    body = page.request.get("/api/tasks/graded-rows").json()
    assert (body["output_kind"], body["metric"], body["target_name"]) == ("classes", "macro_f1", "grade")
    assert [m["name"] for m in body["models"]] == ["auto"]
    task = Task.objects.get(slug="graded-rows")
    assert task.n_train + task.n_val + task.n_gate + task.n_test == 90 and task.feature_names == ["x1", "x2", "x3"]
    model = NeuralModel.objects.get(task=task)
    assert any(q.func() == BOOTSTRAP_TASK and q.task["args"][0] == model.pk for q in OrmQ.objects.all()), \
        "the first version's training is queued for a worker"

    wait_live(page)
    model_bootstrap(model=model)  # what the worker does with that queued training
    page.locator(f'tr[data-model="{model.pk}"] [data-active-version="1"]').wait_for(timeout=DEADLINE_MS)
    assert page.errors == []


def test_a_refusal_is_shown_next_to_the_file_input_without_a_reload(page, operator, tmp_path):
    path = tmp_path / "semicolons.csv"
    path.write_text("a;b;c\n" + "1;2;3\n" * 40)
    login(page, "alice", "alice-pass-123")
    page.goto("/tasks/new/")
    page.evaluate("() => { window.__sameDocument = true; }")
    page.set_input_files("#task-new-file", str(path))
    error = page.locator('[data-field="file"] [data-form-error]')
    error.wait_for()
    assert "holding semicolons" in error.inner_text() and "separated by commas" in error.inner_text()
    assert page.evaluate("() => window.__sameDocument") is True
    assert not Task.objects.exists()
    assert page.errors == []
