"""Health metrics on hand-built histories give the hand-computed values."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from improvement.health import (
    gain_per_cpu_second,
    learning_rate,
    mean_gain,
    model_health,
    overall_health,
    stability,
    success_rate,
    system_health_report,
)
from improvement.models import ImprovementRun
from models_registry.models import NeuralModel
from models_registry.services import model_create
from tests.factories import csv_task, version_with_score

P, R, F = "promoted", "rejected", "failed"


def test_efficiency():
    assert mean_gain([0.2, 0.4]) == pytest.approx(0.3)
    assert mean_gain([]) == 0.0
    # promoted gains 0.2 + 0.4 over 10 + 20 + 30 CPU-seconds of all finished runs.
    assert gain_per_cpu_second([0.2, 0.4], [10, 20, 30]) == pytest.approx(0.01)
    assert gain_per_cpu_second([0.5], [0.0]) == 0.0


def test_success_rate_and_stability():
    assert success_rate([P, R, F, P]) == 0.5
    # Windows of 2: rates 1.0, 0.0 → std 0.5 → stability 0.
    assert stability([P, P, R, R], window=2) == pytest.approx(0.0)
    # Rates 0.5, 0.5 → stability 1.
    assert stability([P, R, R, P], window=2) == pytest.approx(1.0)
    # Rates 1.0, 0.5 → std 0.25 → 0.5.
    assert stability([P, P, P, R], window=2) == pytest.approx(0.5)
    # The partial last window is ignored; one window → 1.0.
    assert stability([P, R, F], window=2) == 1.0


def test_learning_rate_is_the_slope_of_the_running_best():
    # Best scores 0.5, 0.7, 0.7 (the dip to 0.6 does not count) at 0, 1, 2 hours.
    points = [(0.0, 0.5), (1.0, 0.7), (2.0, 0.6)]
    # Least squares through (0, .5), (1, .7), (2, .7): slope = 0.1 per hour.
    assert learning_rate(points) == pytest.approx(0.1)
    assert learning_rate([(0.0, 0.9)]) == 0.0


def test_overall_health_formula():
    assert overall_health(mean_score=0.8, success=0.5, stable=1.0, pressure=0.2) == pytest.approx(
        0.5 * 0.8 + 0.2 * 0.5 + 0.15 * 1.0 + 0.15 * 0.8)


@pytest.mark.django_db
def test_report_has_fleet_and_model_sections():
    model = model_create(task=csv_task(), name="m")
    version_with_score(model, 0.6)
    ImprovementRun.objects.create(model=model, strategy="training", status=P, gain=0.3, cpu_seconds=3.0)
    ImprovementRun.objects.create(model=model, strategy="training", status=R, gain=0.01, cpu_seconds=3.0)
    report = system_health_report()
    fleet = report["fleet"]
    assert fleet["finished_runs"] == 2 and fleet["promoted"] == 1
    assert fleet["success_rate"] == 0.5
    assert fleet["improvement_efficiency"]["mean_gain"] == pytest.approx(0.3)
    assert fleet["improvement_efficiency"]["gain_per_cpu_second"] == pytest.approx(0.05)
    assert 0.0 <= fleet["overall_health"] <= 1.0
    assert {"cpu_percent", "memory_percent"} <= set(fleet["resource_usage"])
    (entry,) = report["models"]
    assert entry["model"] == str(model) and entry["gate_score"] == 0.6 and "test_score" in entry


@pytest.mark.django_db
def test_report_reads_the_fleet_in_a_fixed_number_of_queries():
    """The overview renders this report: one query per model made it slow with 100 models."""
    task = csv_task()

    def add_model(name: str, scores: list[float], statuses: list[str]) -> None:
        model = model_create(task=task, name=name)
        for score in scores:
            version_with_score(model, score)
        for i, status in enumerate(statuses):
            ImprovementRun.objects.create(model=model, strategy="training", status=status, gain=0.1 * i,
                                          cpu_seconds=1.0 + i)

    add_model("a", [0.5, 0.7], [P, R, F, P])
    with CaptureQueriesContext(connection) as one:
        system_health_report()
    add_model("b", [0.6], [R, R])
    add_model("c", [], [])
    with CaptureQueriesContext(connection) as three:
        report = system_health_report()
    assert len(three) == len(one)
    pressure = max(report["fleet"]["resource_usage"]["cpu_percent"],
                   report["fleet"]["resource_usage"]["memory_percent"]) / 100.0
    for entry, model in zip(report["models"], NeuralModel.objects.order_by("pk"), strict=True):
        expected = model_health(model, pressure=pressure)
        assert entry == expected, model.name
    assert [m["finished_runs"] for m in report["models"]] == [4, 2, 0] and report["models"][2]["gate_score"] == 0.0
