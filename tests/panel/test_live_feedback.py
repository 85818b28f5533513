"""The tasks page shows live scores from feedback per implementation and version, with their intervals."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from models_registry.nn.significance import wilson_interval
from models_registry.services import model_create
from models_registry.serving.models import Feedback
from tests.factories import csv_task, version_with_score

pytestmark = pytest.mark.django_db


def _reports(task, version, *, right: int, wrong: int, start: int) -> None:
    now = timezone.now()
    Feedback.objects.bulk_create([
        Feedback(task=task, implementation="neural" if version else "algorithmic", version=version,
                 prediction=f"{start + i:032x}", row=0, predicted=1, truth=1 if i < right else 2, correct=i < right,
                 predicted_at=now)
        for i in range(right + wrong)
    ])


def test_the_tasks_page_shows_live_accuracy_per_implementation_and_version(viewer_client):
    task = csv_task()
    model = model_create(task=task, name="m")
    version = version_with_score(model, 0.95)
    _reports(task, version, right=30, wrong=10, start=0)  # 0.75 over 40
    _reports(task, None, right=9, wrong=1, start=100)  # 0.90 over 10: fewer than the decisions' minimum
    page = viewer_client.get(reverse("panel:tasks")).content.decode()
    table = re.search(r'<table class="compact live-feedback" data-live-feedback="blobs">(.*?)</table>', page, re.S)
    assert table is not None
    rows = re.findall(r'<tr data-live-implementation="(\w+)" data-live-version="(\d*)">(.*?)</tr>', table.group(1),
                      re.S)
    assert [(implementation, number) for implementation, number, _ in rows] == [("neural", str(version.number)),
                                                                                ("algorithmic", "")]
    low, high = wilson_interval(30, 40)
    neural = re.sub(r"\s+", " ", rows[0][2])
    assert f"0.7500 <span class=\"muted\">[{low:.3f}, {high:.3f}]</span>" in neural
    assert "(&lt; 30)" in re.sub(r"\s+", " ", rows[1][2])  # the algorithm's 10 reports are marked as too few
    figure = json.loads(re.search(r'<script id="tasks-figure" type="application/json">(.*?)</script>', page,
                                  re.S).group(1))
    [trace] = [t for t in figure["data"] if t["name"] == "neural live score (95% CI)"]
    assert trace["y"] == [pytest.approx(0.75)]
    assert trace["error_y"]["array"] == [pytest.approx(high - 0.75)]
    assert trace["error_y"]["arrayminus"] == [pytest.approx(0.75 - low)]
