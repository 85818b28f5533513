"""The task page (``/tasks/<slug>/``): data, splits and dataset versions, the drift and live-score charts,
access; and a trigger's evidence on the run page and in the cycle's decisions."""

from __future__ import annotations

import json
import math
import re
from datetime import timedelta

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from hormones.services import hormones_ensure
from improvement.models import GeneticTrigger, ImprovementConfig, ImprovementRun
from improvement.scheduler.cycle import cycle_run
from models_registry.dataset_versions import task_rows_append
from models_registry.nn.significance import Z95, wilson_interval
from models_registry.services import model_create, task_create_from_upload
from models_registry.serving.drift import DriftReport, FeatureShift
from models_registry.serving.input_drift import drift_reading_record, input_drift_record
from models_registry.serving.models import DriftReading, Feedback
from project.panel.charts import ms
from tests.factories import blobs_csv, csv_task, version_with_score

pytestmark = pytest.mark.django_db


def _figure(html: str, name: str) -> dict:
    found = re.search(rf'<script id="{name}" type="application/json">(.*?)</script>', html, re.S)
    assert found is not None, name
    return json.loads(found.group(1))


def _trace(figure: dict, name: str) -> dict:
    [trace] = [t for t in figure["data"] if t.get("name") == name]
    return trace


def _report(psi: dict[str, float], *, threshold: float, rows: int, moved: tuple[str, ...] = ()) -> DriftReport:
    ranked = [FeatureShift(name, value, 1e-6 if name in moved else 0.5)
              for name, value in sorted(psi.items(), key=lambda item: -item[1])]
    return DriftReport(drifted=bool(moved), psi_max=ranked[0].psi, threshold=threshold, rows=rows, reference_rows=144,
                       space="columns", shifts=[s for s in ranked if s.feature in moved], top=ranked)


# ------------------------------------------------------------------------------ the page


def test_the_page_shows_the_tasks_data_splits_and_dataset_versions(viewer_client):
    task = csv_task(n=240)
    model = model_create(task=task, name="m")
    version = version_with_score(model, 0.9)
    appended, created = task_rows_append(task=task, filename="more.csv", content=blobs_csv(n=60, seed=4))
    assert created
    task.refresh_from_db()
    response = viewer_client.get(reverse("panel:task", args=[task.slug]))
    assert response.status_code == 200
    html = response.content.decode()
    sizes = dict(re.findall(r'<tr data-split="(\w+)">.*?<td data-split-rows>(\d+)</td>', html, re.S))
    assert sizes == {"train": str(task.n_train), "validation": str(task.n_val), "gate": str(task.n_gate),
                     "test": str(task.n_test)}
    assert sum(int(v) for v in sizes.values()) == task.n_samples == 300
    versions = re.findall(r'<tr data-dataset-version="(\d+)">\s*<td>v\d+</td><td>(.*?)</td>', html, re.S)
    assert versions == [(str(appended.number), f"v{appended.number - 1}"), ("1", "—")]  # newest first, with lineage
    assert f"{appended.n_train} / {appended.n_val} / {appended.n_gate} / {appended.n_test}" in html
    assert re.search(r"<dd class=\"wrap\" data-task-classes>c0, c1, c2</dd>", html)
    assert f'data-active-version="{version.number}"' in html
    # The append form is there for operators only, and comes back to this page without script.
    assert 'name="file"' not in html


def test_operators_append_rows_from_the_page_with_and_without_script(operator_client):
    task = csv_task(n=240)
    url = reverse("panel:task", args=[task.slug])
    html = operator_client.get(url).content.decode()
    assert f'action="{reverse("panel:task-rows", args=[task.slug])}"' in html
    assert f'<input type="hidden" name="next" value="{url}">' in html
    upload = SimpleUploadedFile("more.csv", blobs_csv(n=30, seed=9), content_type="text/csv")
    response = operator_client.post(reverse("panel:task-rows", args=[task.slug]), {"file": upload, "next": url})
    assert response.status_code == 302 and response["Location"] == url
    task.refresh_from_db()
    assert task.n_samples == 270 and task.dataset_versions.count() == 2
    bad = SimpleUploadedFile("bad.csv", b"f0,f1\n1,2\n", content_type="text/csv")
    refused = operator_client.post(reverse("panel:task-rows", args=[task.slug]), {"file": bad, "next": url})
    assert refused.status_code == 400
    page = refused.content.decode()
    assert 'id="task-datasets"' in page and 'class="field has-error"' in page  # the task page, with the error
    task.refresh_from_db()
    assert task.n_samples == 270


def test_anonymous_is_sent_to_login_and_an_unknown_task_is_not_found(client, viewer_client):
    task = csv_task(n=120)
    url = reverse("panel:task", args=[task.slug])
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert viewer_client.get(reverse("panel:task", args=["no-such-task"])).status_code == 404


def test_the_task_is_linked_from_the_tasks_list_the_overview_and_the_model_page(viewer_client):
    task = csv_task(n=120)
    model = model_create(task=task, name="m")
    version_with_score(model, 0.9)
    url = reverse("panel:task", args=[task.slug])
    for page in (reverse("panel:tasks"), reverse("overview"), reverse("panel:model", args=[model.pk])):
        assert f'href="{url}"' in viewer_client.get(page).content.decode(), page


# ------------------------------------------------------------------------------ drift chart


def test_the_drift_figure_carries_the_stored_readings_the_threshold_and_the_alarms(viewer_client):
    task = csv_task(n=120)
    hormones_ensure()
    calm = [{"f0": 0.02, "f1": 0.01}, {"f0": 0.05, "f2": 0.03}]
    for psi in calm:
        drift_reading_record(task=task, report=_report(psi, threshold=0.25, rows=600), drift=None)
    moved = _report({"f2": 0.61, "f0": 0.04}, threshold=0.2, rows=800, moved=("f2",))
    alarm = input_drift_record(task=task, report=moved)
    drift_reading_record(task=task, report=moved, drift=alarm)
    readings = list(DriftReading.objects.filter(task=task).order_by("created_at", "id"))
    assert len(readings) == 3

    html = viewer_client.get(reverse("panel:task", args=[task.slug])).content.decode()
    figure = _figure(html, "drift-figure")
    largest = _trace(figure, "largest PSI")
    assert largest["x"] == [ms(r.created_at) for r in readings]
    assert largest["y"] == pytest.approx([0.02, 0.05, 0.61])
    assert _trace(figure, "threshold")["y"] == [0.25, 0.25, 0.2]  # the threshold each check used
    alarms = _trace(figure, "alarm")
    assert alarms["x"] == [ms(alarm.created_at)] and alarms["y"] == pytest.approx([0.61])
    assert _trace(figure, "f2")["y"] == [None, pytest.approx(0.03), pytest.approx(0.61)]  # a gap: not in the top
    assert figure["layout"]["yaxis"]["rangemode"] == "tozero"
    low, high = figure["layout"]["xaxis"]["range"]
    assert low < largest["x"][0] and high > largest["x"][-1]
    assert f'data-drift-alarm="{alarm.pk}"' in html


def test_a_task_without_drift_checks_or_feedback_draws_no_axes(viewer_client):
    task = csv_task(n=120)
    html = viewer_client.get(reverse("panel:task", args=[task.slug])).content.decode()
    for name in ("drift-figure", "live-figure"):
        figure = _figure(html, name)
        assert figure["data"] == [] and figure["layout"]["xaxis"]["visible"] is False
        assert figure["layout"]["annotations"][0]["text"]


# ------------------------------------------------------------------------------ live score chart


def _feedback(task, version, at, *, right: int, wrong: int, start: int) -> None:
    Feedback.objects.bulk_create([
        Feedback(task=task, implementation="neural" if version else "algorithmic", version=version,
                 prediction=f"{start + i:032x}", row=0, predicted=1, truth=1 if i < right else 2, correct=i < right,
                 predicted_at=at)
        for i in range(right + wrong)
    ])


def test_the_live_accuracy_figure_has_one_point_per_bucket_with_wilson_bands(viewer_client):
    task = csv_task(n=120)
    model = model_create(task=task, name="m")
    version = version_with_score(model, 0.9)
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    first, second = hour - timedelta(hours=3) + timedelta(minutes=10), hour - timedelta(minutes=50)
    _feedback(task, version, first, right=8, wrong=2, start=0)
    _feedback(task, version, first + timedelta(minutes=5), right=4, wrong=6, start=100)  # the same hour
    _feedback(task, version, second, right=3, wrong=3, start=200)
    _feedback(task, None, second, right=5, wrong=0, start=300)

    html = viewer_client.get(reverse("panel:task", args=[task.slug])).content.decode()
    assert "in 1 hour buckets" in html  # a 3 h span: minutes would be 180 buckets
    figure = _figure(html, "live-figure")
    neural = _trace(figure, f"neural v{version.number}")
    middle = 30 * 60 * 1000
    first_hour = first.replace(minute=0)
    assert neural["x"] == [ms(first_hour) + middle, ms(hour - timedelta(hours=1)) + middle]
    assert neural["y"] == pytest.approx([12 / 20, 3 / 6])
    assert [c[0] for c in neural["customdata"]] == [20, 6]
    assert _trace(figure, f"neural v{version.number} 95% low")["y"] == pytest.approx(
        [wilson_interval(12, 20)[0], wilson_interval(3, 6)[0]])
    assert _trace(figure, f"neural v{version.number} 95% high")["y"] == pytest.approx(
        [wilson_interval(12, 20)[1], wilson_interval(3, 6)[1]])
    algorithmic = _trace(figure, "algorithmic")
    assert algorithmic["y"] == pytest.approx([1.0]) and algorithmic["customdata"][0][0] == 5
    assert figure["layout"]["yaxis"]["range"] == [0, 1.02]
    assert figure["layout"]["xaxis"]["range"] == [ms(first_hour), ms(hour)]  # exactly the buckets, no more


def test_a_values_task_charts_its_mean_absolute_error_with_a_normal_interval(viewer_client):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    lines = ["a,b,c,y"] + [",".join(f"{v:.4f}" for v in row) + f",{row.sum():.4f}" for row in X]
    task = task_create_from_upload(name="sums", filename="sums.csv", content=("\n".join(lines) + "\n").encode())
    assert task.output_kind == "values"
    errors = [0.1, 0.4, 0.25, 0.05, 0.3]
    at = timezone.now() - timedelta(minutes=3)
    Feedback.objects.bulk_create([
        Feedback(task=task, implementation="algorithmic", prediction=f"{i:032x}", row=0, predicted=[1.0],
                 truth=[1.0 + e], abs_error=e, predicted_at=at) for i, e in enumerate(errors)
    ])
    html = viewer_client.get(reverse("panel:task", args=[task.slug])).content.decode()
    figure = _figure(html, "live-figure")
    mean, half = np.mean(errors), Z95 * np.std(errors, ddof=1) / math.sqrt(len(errors))
    assert _trace(figure, "algorithmic")["y"] == pytest.approx([mean])
    assert _trace(figure, "algorithmic 95% low")["y"] == pytest.approx([max(0.0, mean - half)])
    assert _trace(figure, "algorithmic 95% high")["y"] == pytest.approx([mean + half])
    assert figure["layout"]["yaxis"]["rangemode"] == "tozero" and "range" not in figure["layout"]["yaxis"]


# ------------------------------------------------------------------------------ trigger evidence


def test_a_drift_triggered_run_shows_its_evidence_on_the_run_page_and_in_the_decisions(viewer_client):
    hormones_ensure()
    ImprovementConfig.objects.update_or_create(pk=1, defaults={"max_concurrent_improvements": 3})
    task = csv_task(n=120)
    model = model_create(task=task, name="m")
    version_with_score(model, 0.9)
    alarm = input_drift_record(task=task, report=_report({"f2": 0.73, "f0": 0.31, "f1": 0.02}, threshold=0.25,
                                                         rows=768, moved=("f2", "f0")))
    record = cycle_run(trigger="forced")
    run = ImprovementRun.objects.get(model=model)
    trigger = GeneticTrigger.objects.get(run=run)
    assert trigger.kind == "drift" and trigger.evidence["input_drift_id"] == alarm.pk
    [decision] = [d for d in record.decisions if d["chosen"]]
    assert decision["genetic_trigger"] == "drift" and decision["evidence"]["input_drift_id"] == alarm.pk

    html = viewer_client.get(reverse("panel:run", args=[run.pk])).content.decode()
    section = re.search(r'<section class="card" id="run-trigger">(.*?)</section>', html, re.S)
    assert section is not None
    evidence = section.group(1)
    assert re.findall(r'data-trigger-feature="(\w+)"><td>\w+</td><td>([\d.]+)</td>', evidence) == [
        ("f2", "0.7300"), ("f0", "0.3100")]
    assert "largest PSI 0.730 ≥ threshold 0.250" in re.sub(r"\s+", " ", evidence)
    assert "768 live rows" in evidence and "Drift seen by serving: live inputs moved" in evidence
    assert f'href="{reverse("panel:task", args=[task.slug])}#drift"' in evidence

    config = viewer_client.get(reverse("panel:config")).content.decode()
    decisions = re.search(r'<section class="card" id="decisions">(.*?)</section>', config, re.S).group(1)
    assert 'data-trigger="drift"' in decisions and 'data-trigger-feature="f2"' in decisions


def test_a_growth_triggered_run_shows_the_rows_before_and_after(viewer_client):
    task = csv_task(n=120)
    model = model_create(task=task, name="m")
    version_with_score(model, 0.9)
    run = ImprovementRun.objects.create(model=model, strategy="architecture",
                                        trigger_reason="[genetic] genetic trigger: data growth: 72 → 96 training rows")
    GeneticTrigger.objects.create(model=model, kind="data_growth", run=run,
                                  evidence={"trained_on": 72, "now": 96, "fraction": 0.2, "dataset_versions": [2, 3]})
    html = viewer_client.get(reverse("panel:run", args=[run.pk])).content.decode()
    assert re.search(r"data-trigger-growth>training rows 72 → 96</span>\s*\(\+33 %, fires at \+20 %\)", html)
    assert "dataset v2, v3" in html
    assert "genetic trigger" in html
