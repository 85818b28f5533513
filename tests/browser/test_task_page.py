"""The task page in a real browser: both of its charts draw (drift readings, live accuracy from feedback).

Screenshot: docs/screenshots/task.png.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from hormones.services import hormones_ensure
from models_registry.services import model_create
from models_registry.serving.drift import DriftReport, FeatureShift
from models_registry.serving.input_drift import drift_reading_record
from models_registry.serving.models import DriftReading, Feedback
from tests.browser.conftest import SCREENSHOTS, login, wait_charts
from tests.browser.seed import version_made
from tests.factories import csv_task

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_task_page_draws_its_drift_and_live_accuracy_charts(page, viewer):
    hormones_ensure()
    task = csv_task(n=120)
    model = model_create(task=task, name="baseline")
    version_made(model, score=0.84, latency_ms=0.2, hidden=[16, 8],
                 parent=version_made(model, score=0.66, latency_ms=0.1, hidden=[8]))
    now = timezone.now()
    # A reading every half hour over the last six hours (oldest first), as the periodic check would leave them.
    for i, psi in enumerate((0.03, 0.08, 0.05, 0.06, 0.04, 0.11, 0.09, 0.14, 0.12, 0.07, 0.10, 0.16)):
        shifts = [FeatureShift("f0", psi, 0.5), FeatureShift("f1", psi / 2, 0.5), FeatureShift("f2", psi / 3, 0.6)]
        reading = drift_reading_record(task=task, drift=None, report=DriftReport(
            drifted=False, psi_max=psi, threshold=0.25, rows=600, reference_rows=72, space="columns", shifts=[],
            top=shifts))
        DriftReading.objects.filter(pk=reading.pk).update(created_at=now - timedelta(minutes=30 * (11 - i)))
    # Truths over the last six hours: one wrong answer in three at first, one in seven in the last three hours.
    wrong = [i % 7 == 0 if i < 60 else i % 3 == 0 for i in range(120)]
    Feedback.objects.bulk_create([
        Feedback(task=task, implementation="algorithmic", prediction=f"{i:032x}", row=0, predicted=1,
                 truth=2 if wrong[i] else 1, correct=not wrong[i], predicted_at=now - timedelta(minutes=3 * i))
        for i in range(120)
    ])
    login(page, "bob", "bob-pass-123")
    page.goto(f"/tasks/{task.slug}/")
    wait_charts(page, 2)
    assert page.locator("#drift .main-svg").count() >= 1
    assert page.locator("#live-score .main-svg").count() >= 1
    assert page.locator("#drift .scatterlayer .trace").count() >= 3  # features, largest PSI, threshold
    assert page.locator("#live-score .scatterlayer .trace").count() == 3  # band (two edges) and the line
    assert page.errors == []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(300)  # let Plotly finish its transitions
    page.screenshot(path=str(SCREENSHOTS / "task.png"), full_page=True)
