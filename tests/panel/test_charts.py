"""Server-side figures: long series are downsampled, shapes survive, the Pareto front is right."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from django.utils import timezone

from project.panel import charts


def test_lttb_keeps_the_ends_and_at_most_the_threshold():
    points = [(float(i), math.sin(i / 50.0)) for i in range(10_000)]
    kept = charts.lttb(points, 500)
    assert len(kept) == 500
    assert kept[0] == points[0] and kept[-1] == points[-1]
    assert [p[0] for p in kept] == sorted(p[0] for p in kept)


def test_lttb_keeps_a_spike():
    points = [(float(i), 0.0) for i in range(5000)]
    points[2345] = (2345.0, 10.0)
    assert (2345.0, 10.0) in charts.lttb(points, 100)


def test_short_series_pass_through_and_missing_values_drop():
    xs, ys = charts.downsample([1, 2, 3], [0.5, None, float("nan")])
    assert (xs, ys) == ([1.0], [0.5])


def test_run_curve_figure_is_capped():
    curve = [{"train_loss": 1.0 / (i + 1), "val_score": i / 3000, "t": i} for i in range(3000)]
    figure = charts.run_curve_figure(curve)
    assert all(len(trace["x"]) <= charts.MAX_POINTS for trace in figure["data"])
    assert figure["data"][0]["x"][-1] == 3000  # the step axis still ends at the last point


def test_pareto_front():
    points = [(1.0, 0.5), (2.0, 0.9), (0.5, 0.4), (3.0, 0.8), (2.5, 0.95)]
    assert sorted(charts.pareto_front(points)) == [0, 1, 2, 4]


def test_pareto_figure_sizes_by_parameters():
    versions = [{"number": i, "score": 0.5 + i / 10, "latency_p95_ms": 0.1 * (i + 1), "n_parameters": 10 ** i,
                 "runtime": "torch_fp32", "is_active": i == 2} for i in range(1, 4)]
    trace = charts.pareto_figure(versions)["data"][1]
    assert trace["marker"]["size"] == sorted(trace["marker"]["size"])
    assert trace["marker"]["color"][1] == charts.ACCENT


@pytest.mark.django_db
def test_hormone_series_follow_events_and_decay():
    from hormones.models import Hormone
    from hormones.services import hormone_release, hormones_ensure
    from project.panel.selectors import hormone_series

    hormones_ensure()
    hormone_release(name="adrenaline", delta=0.5, cause="test")
    now = timezone.now()
    series = hormone_series(since=now - timedelta(hours=1), until=now + timedelta(minutes=30))
    adrenaline = series["adrenaline"]
    levels = [level for _, level in adrenaline]
    assert max(levels) == pytest.approx(0.6, abs=1e-3)  # baseline 0.1 + 0.5
    assert levels[0] == pytest.approx(0.1, abs=1e-3)
    half_life = Hormone.objects.get(name="adrenaline").half_life_s
    # 30 minutes later (6 half-lives of 300 s) it is almost back at its baseline.
    assert levels[-1] == pytest.approx(0.1 + 0.5 * 2 ** (-1800 / half_life), abs=1e-3)
    assert [t for t, _ in adrenaline] == sorted(t for t, _ in adrenaline)
    assert set(series) == {"dopamine", "cortisol", "adrenaline", "serotonin", "oxytocin"}
