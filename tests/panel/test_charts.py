"""Server-side figures: long series are downsampled, shapes survive, the Pareto front is right."""

from __future__ import annotations

import json
import math
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from hormones.models import Hormone, HormoneEvent
from hormones.services import hormone_release, hormones_ensure
from project.panel import charts
from project.panel.selectors import hormone_default_hours, hormone_first_record


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


# ------------------------------------------------------------------------------ readable axes


def _in_log_range(axis: dict, value: float) -> bool:
    low, high = axis["range"]
    return low <= math.log10(value) <= high


def test_the_tasks_chart_latency_axis_has_plain_decade_ticks():
    rows = [{"task": "a", "neural_score": 0.9, "algorithmic_score": 0.95, "neural_p95_ms": 0.09,
             "algorithmic_p95_ms": 12.0},
            {"task": "b", "neural_score": 0.7, "algorithmic_score": None, "neural_p95_ms": 0.4,
             "algorithmic_p95_ms": None}]
    axis = charts.serving_comparison_figure(rows)["layout"]["yaxis2"]
    assert axis["type"] == "log" and axis["overlaying"] == "y" and axis["side"] == "right"
    assert axis["tickvals"] == [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]
    assert axis["ticktext"] == ["0.1", "0.2", "0.5", "1", "2", "5", "10"]
    assert all(_in_log_range(axis, t) for t in axis["tickvals"])
    assert _in_log_range(axis, 0.09) and _in_log_range(axis, 12.0)  # every point is on the chart


def test_a_wide_latency_range_gets_powers_of_ten_only():
    axis = charts.log_axis([0.002, 900.0])
    assert axis["tickvals"] == [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]
    assert axis["ticktext"] == ["0.01", "0.1", "1", "10", "100", "1000"]


def test_a_single_latency_still_gets_two_readable_ticks():
    axis = charts.log_axis([3.0])
    assert len(axis["tickvals"]) >= 2 and _in_log_range(axis, 3.0)
    assert all(_in_log_range(axis, t) for t in axis["tickvals"])
    assert charts.log_axis([None, 0.0]) == {"type": "log"}  # nothing positive: Plotly's own axis


ONE_VERSION = [{"number": 1, "score": 0.52, "latency_p95_ms": 0.09, "n_parameters": 35, "runtime": "torch_fp32",
                "is_active": True}]


def test_a_one_version_history_is_centred_on_that_version():
    layout = charts.version_history_figure(ONE_VERSION)["layout"]
    assert layout["xaxis"]["range"] == [0.5, 1.5]  # the tick is v1 alone, not v0 … v2
    assert layout["xaxis"]["dtick"] == 1 and layout["xaxis"]["tickformat"] == "d"
    low, high = layout["yaxis"]["range"]
    assert 0.0 <= low < 0.52 < high <= 1.02 and high - low <= 0.1  # never −0.5
    low2, high2 = layout["yaxis2"]["range"]
    assert low2 == 0 and high2 > 0.09


def test_a_one_version_pareto_chart_has_a_score_range_around_its_point():
    layout = charts.pareto_figure(ONE_VERSION)["layout"]
    low, high = layout["yaxis"]["range"]
    assert 0.0 <= low < 0.52 < high and high - low <= 0.1
    assert _in_log_range(layout["xaxis"], 0.09)


def test_history_ticks_stay_whole_versions_for_long_lineages():
    versions = [{"number": n, "score": 0.5 + n / 200, "latency_p95_ms": 0.1, "is_active": n == 40}
                for n in range(1, 41)]
    xaxis = charts.version_history_figure(versions)["layout"]["xaxis"]
    assert xaxis["range"] == [0.5, 40.5] and xaxis["dtick"] == 4 and float(xaxis["dtick"]).is_integer()


def test_pareto_labels_are_on_hover_not_drawn_over_the_markers():
    versions = [{"number": i, "score": 0.8 + i / 1000, "latency_p95_ms": 0.1 + i / 1000, "n_parameters": 100,
                 "runtime": "torch_fp32", "is_active": i == 3} for i in range(1, 5)]
    trace = charts.pareto_figure(versions)["data"][1]
    assert trace["mode"] == "markers" and "text" not in trace and "textposition" not in trace
    assert trace["hovertext"] == ["v1", "v2", "v3 (active)", "v4"]
    assert "%{hovertext}" in trace["hovertemplate"]


# ------------------------------------------------------------------------------ hormones window


def _backdate_events(minutes_ago: float) -> None:
    """A hormone history that began ``minutes_ago``: an event then and one a minute ago."""
    hormones_ensure()
    hormone_release(name="dopamine", delta=0.2, cause="first")
    hormone_release(name="cortisol", delta=0.1, cause="second")
    now = timezone.now()
    first, second = HormoneEvent.objects.order_by("id")
    HormoneEvent.objects.filter(pk=first.pk).update(created_at=now - timedelta(minutes=minutes_ago))
    HormoneEvent.objects.filter(pk=second.pk).update(created_at=now - timedelta(minutes=1))
    Hormone.objects.update(updated_at=now - timedelta(minutes=1))


@pytest.mark.django_db
@pytest.mark.parametrize(("minutes_ago", "hours"), [(30, 1), (200, 6), (600, 24), (3 * 24 * 60, 24)])
def test_the_default_hormone_window_fits_the_record(minutes_ago, hours):
    _backdate_events(minutes_ago)
    assert hormone_default_hours() == hours


@pytest.mark.django_db
def test_the_hormones_page_starts_its_lines_at_the_first_record(operator):
    _backdate_events(30)
    first = hormone_first_record()
    assert first == HormoneEvent.objects.order_by("created_at").values_list("created_at", flat=True)[0]
    client = Client()
    client.force_login(operator)
    for url, window_h in (("/hormones/", 1), ("/hormones/?hours=24", 24)):
        page = client.get(url).content.decode()
        assert f'href="?hours={window_h}" class="current"' in page, url
        script = re.search(r'<script id="hormone-figure" type="application/json">(.*?)</script>', page, re.S)
        assert script, url
        figure = json.loads(script.group(1))
        lines = [t for t in figure["data"] if t["mode"] == "lines"]
        assert len(lines) == 5
        # Nothing before the first record, even in a 24 h window; every line reaches now.
        assert min(t["x"][0] for t in lines) == charts.ms(first), url
        assert all(t["x"][-1] >= charts.ms(timezone.now() - timedelta(seconds=30)) for t in lines)
