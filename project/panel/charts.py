"""Plotly figures as plain JSON-ready dicts, built server-side, with long series downsampled.

No plotly import: a figure is ``{"data": [...], "layout": {...}}``, which ``Plotly.newPlot``
takes as it is. Times are epoch milliseconds (Plotly reads numbers on a date axis as UTC ms,
the same unit the browser's ``Date.now()`` gives when it extends a chart live).

Downsampling is largest-triangle-three-buckets (LTTB): it keeps the first and last points
and, per bucket, the point that best preserves the shape, so peaks and steps survive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

MAX_POINTS = 500

FG = "#e6edf3"
MUTED = "#8b98a5"
GRID = "#26313c"
ACCENT = "#4fb3ff"
OK = "#3fb950"
BAD = "#f85149"
WARN = "#d29922"
HORMONE_COLORS = {
    "dopamine": "#4fb3ff", "cortisol": "#f85149", "adrenaline": "#d29922", "serotonin": "#3fb950",
    "oxytocin": "#bc8cff",
}
PALETTE = ["#4fb3ff", "#3fb950", "#d29922", "#f85149", "#bc8cff", "#39c5cf", "#ff7b72", "#a5d6ff"]


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def lttb(points: Sequence[tuple[float, float]], threshold: int = MAX_POINTS) -> list[tuple[float, float]]:
    """Largest-triangle-three-buckets: at most ``threshold`` of ``points`` (sorted by x)."""
    n = len(points)
    if n <= threshold:
        return list(points)
    if threshold < 3:
        return [points[0], points[-1]][: max(0, threshold)]
    sampled = [points[0]]
    every = (n - 2) / (threshold - 2)
    a = 0
    for i in range(threshold - 2):
        # The average of the next bucket is the third corner of the triangle.
        start_next = int(math.floor((i + 1) * every)) + 1
        end_next = min(int(math.floor((i + 2) * every)) + 1, n)
        nxt = points[start_next:end_next] or [points[-1]]
        avg_x = sum(p[0] for p in nxt) / len(nxt)
        avg_y = sum(p[1] for p in nxt) / len(nxt)
        start = int(math.floor(i * every)) + 1
        end = int(math.floor((i + 1) * every)) + 1
        ax, ay = points[a]
        best, best_area = start, -1.0
        for j in range(start, min(end, n - 1)):
            px, py = points[j]
            area = abs((ax - avg_x) * (py - ay) - (ax - px) * (avg_y - ay))
            if area > best_area:
                best, best_area = j, area
        sampled.append(points[best])
        a = best
    sampled.append(points[-1])
    return sampled


def downsample(xs: Sequence[float], ys: Sequence[float | None], max_points: int = MAX_POINTS
               ) -> tuple[list[float], list[float]]:
    """``xs``/``ys`` cut to at most ``max_points`` (missing y values are dropped first)."""
    points = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True) if y is not None and math.isfinite(y)]
    kept = lttb(points, max_points)
    return [p[0] for p in kept], [p[1] for p in kept]


def layout(**overrides) -> dict:
    """The dark theme every chart shares."""
    base: dict[str, Any] = {
        "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"color": FG, "size": 12, "family": "system-ui, -apple-system, Segoe UI, sans-serif"},
        "margin": {"l": 52, "r": 20, "t": 36, "b": 40}, "height": 300,
        "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom", "font": {"color": MUTED},
                   "bgcolor": "rgba(0,0,0,0)"},
        "xaxis": {"gridcolor": GRID, "zerolinecolor": GRID, "linecolor": GRID, "automargin": True},
        "yaxis": {"gridcolor": GRID, "zerolinecolor": GRID, "linecolor": GRID, "automargin": True},
        "hovermode": "closest",
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def figure(data: list[dict], **layout_overrides) -> dict:
    return {"data": data, "layout": layout(**layout_overrides)}


# ------------------------------------------------------------------------------ axes


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def ms_label(value: float) -> str:
    """A latency tick: ``0.01``, ``0.5``, ``2``, ``100``, ``2000`` (no exponent, no trailing zeros)."""
    return f"{value:.6f}".rstrip("0").rstrip(".") if value < 1 else f"{value:.0f}"


def log_axis(values: Sequence[float | None], **extra) -> dict:
    """A log axis with readable ticks for positive ``values``: powers of ten, with 2 and 5 (and 3 within
    about a decade) between them when the data span less than three decades, each written in plain
    digits ("0.1", "2", "10").

    Plotly's own log ticks label the minor digits (10, 2, 4, 9 …); here the ticks are given.
    """
    positive = [v for v in _finite(values) if v > 0]
    axis: dict[str, Any] = {"type": "log", **extra}
    if not positive:
        return axis
    low, high = math.log10(min(positive)), math.log10(max(positive))
    pad = max(0.15, 0.05 * (high - low))
    low, high = low - pad, high + pad
    steps = (1, 2, 3, 5) if high - low < 1.2 else (1, 2, 5) if high - low < 3 else (1,)
    ticks = [step * 10.0 ** k for k in range(math.floor(low), math.ceil(high) + 1) for step in steps
             if low <= math.log10(step * 10.0 ** k) <= high]
    if len(ticks) < 2:  # a narrow range: the nearest ticks on both sides
        ticks = [10.0 ** math.floor(low), 10.0 ** math.ceil(high)]
        low, high = min(low, math.log10(ticks[0])), max(high, math.log10(ticks[-1]))
    ticks = [float(f"{t:.6g}") for t in ticks]
    axis.update(range=[low, high], tickvals=ticks, ticktext=[ms_label(t) for t in ticks])
    return axis


def score_range(values: Sequence[float | None], *, pad_min: float = 0.02) -> list[float] | None:
    """A score axis around the data: padded, never below 0 for scores that are not, never far above 1;
    a single score gets a small window around it rather than Plotly's ±1 (a −0.5 … 1.5 axis)."""
    scores = _finite(values)
    if not scores:
        return None
    low, high = min(scores), max(scores)
    pad = max(pad_min, 0.1 * (high - low))
    bottom, top = low - pad, high + pad
    if low >= 0:
        bottom = max(0.0, bottom)
    if high <= 1:
        top = min(1.0 + pad_min, top)
    return [round(bottom, 6), round(top, 6)]


# ------------------------------------------------------------------------------ hormones


def hormone_levels_figure(series: dict[str, list[tuple[int, float]]], *, events: list[dict] | None = None,
                          height: int = 300, max_points: int = MAX_POINTS) -> dict:
    """One line per hormone over time; ``events`` as markers with their cause on hover.

    Trace ``i`` is the line of the ``i``-th hormone in ``series`` order: the page's script
    extends it live by name (``meta``).
    """
    data: list[dict] = []
    names = list(series)
    for name in names:
        xs, ys = downsample([p[0] for p in series[name]], [p[1] for p in series[name]], max_points)
        data.append({"type": "scatter", "mode": "lines", "name": name, "x": xs, "y": ys, "meta": name,
                     "line": {"color": HORMONE_COLORS.get(name, ACCENT), "width": 2, "shape": "linear"},
                     "hovertemplate": f"{name} %{{y:.3f}}<extra></extra>"})
    if events:
        by_name: dict[str, list[dict]] = {}
        for event in events[-max_points:]:
            by_name.setdefault(event["name"], []).append(event)
        for name, rows in by_name.items():
            data.append({
                "type": "scatter", "mode": "markers", "name": f"{name} events", "showlegend": False,
                "x": [r["at"] for r in rows], "y": [r["level_after"] for r in rows],
                "text": [f"{r['delta']:+.3f} · {r['cause']}" for r in rows],
                "marker": {"color": HORMONE_COLORS.get(name, ACCENT), "size": 7, "symbol": "diamond",
                           "line": {"color": FG, "width": 0.5}},
                "hovertemplate": f"{name} → %{{y:.3f}}<br>%{{text}}<extra></extra>",
            })
    return figure(data, height=height, xaxis={"type": "date"},
                  yaxis={"range": [0, 1.02], "title": {"text": "level"}})


# ------------------------------------------------------------------------------ models


def version_history_figure(versions: list[dict], *, max_points: int = MAX_POINTS) -> dict:
    """Score (left axis) and p95 latency (right axis) of every version, by version number."""
    xs = [v["number"] for v in versions]
    sx, sy = downsample(xs, [v["score"] for v in versions], max_points)
    lx, ly = downsample(xs, [v["latency_p95_ms"] for v in versions], max_points)
    active = [v for v in versions if v["is_active"]]
    data = [
        {"type": "scatter", "mode": "lines+markers", "name": "score", "x": sx, "y": sy,
         "line": {"color": OK}, "hovertemplate": "v%{x}: score %{y:.4f}<extra></extra>"},
        {"type": "scatter", "mode": "lines+markers", "name": "p95 latency (ms)", "x": lx, "y": ly, "yaxis": "y2",
         "line": {"color": WARN, "dash": "dot"}, "hovertemplate": "v%{x}: p95 %{y:.3f} ms<extra></extra>"},
    ]
    if active and active[0]["score"] is not None:
        data.append({"type": "scatter", "mode": "markers", "name": "active", "x": [active[0]["number"]],
                     "y": [active[0]["score"]], "marker": {"color": ACCENT, "size": 15, "symbol": "star"},
                     "hovertemplate": f"active v{active[0]['number']}<extra></extra>"})
    # Version numbers are integers: half a version of margin each side, whole-number ticks only
    # (one version is the range 0.5 … 1.5 with the tick v1, not Plotly's v0 … v2).
    numbers = [float(x) for x in xs]
    xaxis: dict[str, Any] = {"title": {"text": "version"}, "tickprefix": "v", "tickformat": "d", "tick0": 0,
                             "dtick": max(1, math.ceil((max(numbers) - min(numbers)) / 12)) if numbers else 1}
    if numbers:
        xaxis["range"] = [min(numbers) - 0.5, max(numbers) + 0.5]
    yaxis: dict[str, Any] = {"title": {"text": "score"}, "tickformat": ".2f"}
    scores = score_range([v["score"] for v in versions])
    if scores:
        yaxis["range"] = scores
    yaxis2: dict[str, Any] = {"title": {"text": "p95 latency (ms)"}, "overlaying": "y", "side": "right",
                              "showgrid": False, "rangemode": "tozero", "automargin": True, "tickformat": ".3~f"}
    latencies = _finite([v["latency_p95_ms"] for v in versions])
    if latencies and max(latencies) > 0:
        yaxis2["range"] = [0, max(latencies) * 1.15]
    return figure(data, xaxis=xaxis, yaxis=yaxis, yaxis2=yaxis2)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both (lower latency x, higher score y)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def pareto_figure(versions: list[dict]) -> dict:
    """Every version as score vs p95 latency; marker area ∝ parameters; the front joined."""
    rows = [v for v in versions if v["score"] is not None and v["latency_p95_ms"]]
    params = [max(1, v["n_parameters"] or 1) for v in rows]
    largest = max(params, default=1)
    sizes = [8 + 32 * math.sqrt(p / largest) for p in params]
    front = pareto_front([(v["latency_p95_ms"], v["score"]) for v in rows])
    front_rows = sorted((rows[i] for i in front), key=lambda v: v["latency_p95_ms"])
    colors = [ACCENT if v["is_active"] else MUTED for v in rows]
    data = [
        {"type": "scatter", "mode": "lines", "name": "Pareto front", "x": [v["latency_p95_ms"] for v in front_rows],
         "y": [v["score"] for v in front_rows], "line": {"color": OK, "dash": "dash", "shape": "hv"},
         "hoverinfo": "skip"},
        # Labels on hover only: always-on labels of nearby versions overlap their markers and each other.
        {"type": "scatter", "mode": "markers", "name": "versions",
         "x": [v["latency_p95_ms"] for v in rows], "y": [v["score"] for v in rows],
         "hovertext": [f"v{v['number']}{' (active)' if v['is_active'] else ''}" for v in rows],
         "customdata": [[v["n_parameters"] or 0, v["runtime"]] for v in rows],
         "marker": {"size": sizes, "color": colors, "opacity": 0.85, "line": {"color": FG, "width": 1}},
         "hovertemplate": "%{hovertext}<br>score %{y:.4f}<br>p95 %{x:.3f} ms<br>%{customdata[0]} parameters"
                          "<br>%{customdata[1]}<extra></extra>"},
    ]
    yaxis: dict[str, Any] = {"title": {"text": "score"}, "tickformat": ".2f"}
    scores = score_range([v["score"] for v in rows])
    if scores:
        yaxis["range"] = scores
    return figure(data, xaxis=log_axis([v["latency_p95_ms"] for v in rows],
                                       title={"text": "p95 latency, batch 1 (ms)"}),
                  yaxis=yaxis)


# ------------------------------------------------------------------------------ runs


def run_curve_figure(curve: list[dict], *, max_points: int = MAX_POINTS) -> dict:
    """Training loss (left) and validation score (right) of every epoch the run reported.

    x is the point's position in the run's curve, so the page extends both traces with the
    points of each ``run.progress`` event.
    """
    steps = list(range(1, len(curve) + 1))
    lx, ly = downsample(steps, [p.get("train_loss") for p in curve], max_points)
    vx, vy = downsample(steps, [p.get("val_score") for p in curve], max_points)
    data = [
        {"type": "scatter", "mode": "lines", "name": "train loss", "x": lx, "y": ly, "line": {"color": WARN},
         "hovertemplate": "step %{x}<br>loss %{y:.4f}<extra></extra>"},
        {"type": "scatter", "mode": "lines", "name": "validation score", "x": vx, "y": vy, "yaxis": "y2",
         "line": {"color": OK}, "hovertemplate": "step %{x}<br>score %{y:.4f}<extra></extra>"},
    ]
    return figure(data, xaxis={"title": {"text": "epoch (all phases)"}}, yaxis={"title": {"text": "loss"}},
                  yaxis2={"title": {"text": "score"}, "overlaying": "y", "side": "right", "showgrid": False,
                          "tickformat": ".3f", "automargin": True})


# ------------------------------------------------------------------------------ tasks


def _live_trace(rows: list[dict], side: str, color: str, group: str) -> dict | None:
    """Live score from feedback (open circles) with its 95 % interval (error bars), beside its bar."""
    lives = [r.get(f"{side}_live") for r in rows]
    if not any(lives):
        return None
    return {"type": "scatter", "mode": "markers", "name": f"{side} live score (95% CI)", "x": [r["task"] for r in rows],
            "y": [live["score"] if live else None for live in lives], "offsetgroup": group,
            "error_y": {"type": "data", "symmetric": False, "color": color,
                        "array": [live["high"] - live["score"] if live else None for live in lives],
                        "arrayminus": [live["score"] - live["low"] if live else None for live in lives]},
            "customdata": [live["n"] if live else None for live in lives],
            "marker": {"color": color, "symbol": "circle-open", "size": 10, "line": {"width": 2}},
            "hovertemplate": f"{side} live %{{y:.4f}} over %{{customdata}} reports<extra></extra>"}


def serving_comparison_figure(rows: list[dict]) -> dict:
    """Neural vs algorithmic per task: held-out score (bars, left), live score from feedback with its
    95 % interval (open circles, left; only when there is feedback) and p95 latency (markers, right).

    ``neural_live``/``algorithmic_live`` of a row: {"score", "low", "high", "n"} or None.
    """
    tasks = [r["task"] for r in rows]
    data = [
        {"type": "bar", "name": "neural score", "x": tasks, "y": [r["neural_score"] for r in rows],
         "marker": {"color": ACCENT}, "offsetgroup": "n", "hovertemplate": "neural %{y:.4f}<extra></extra>"},
        {"type": "bar", "name": "algorithmic score", "x": tasks, "y": [r["algorithmic_score"] for r in rows],
         "marker": {"color": MUTED}, "offsetgroup": "a", "hovertemplate": "algorithmic %{y:.4f}<extra></extra>"},
        {"type": "scatter", "mode": "markers", "name": "neural p95 ms", "x": tasks,
         "y": [r["neural_p95_ms"] for r in rows], "yaxis": "y2", "offsetgroup": "n",
         "marker": {"color": ACCENT, "symbol": "diamond", "size": 11, "line": {"color": FG, "width": 1}}},
        {"type": "scatter", "mode": "markers", "name": "algorithmic p95 ms", "x": tasks,
         "y": [r["algorithmic_p95_ms"] for r in rows], "yaxis": "y2", "offsetgroup": "a",
         "marker": {"color": MUTED, "symbol": "diamond", "size": 11, "line": {"color": FG, "width": 1}}},
    ]
    data += [trace for trace in (_live_trace(rows, "neural", WARN, "n"), _live_trace(rows, "algorithmic", OK, "a"))
             if trace is not None]
    return figure(data, barmode="group", scattermode="group",
                  yaxis={"title": {"text": "held-out score"}, "range": [0, 1.05]},
                  yaxis2=log_axis([r[key] for r in rows for key in ("neural_p95_ms", "algorithmic_p95_ms")],
                                  title={"text": "p95 latency (ms)"}, overlaying="y", side="right", showgrid=False,
                                  automargin=True))


# ------------------------------------------------------------------------------ task page


DRIFT_FEATURE_LINES = 5


def _rgba(color: str, alpha: float) -> str:
    red, green, blue = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def empty_figure(message: str, *, height: int = 300) -> dict:
    """No data yet: the message in place of the plot, and no axes that would suggest a range."""
    return figure([], height=height, xaxis={"visible": False}, yaxis={"visible": False},
                  annotations=[{"text": message, "showarrow": False, "xref": "paper", "yref": "paper",
                                "x": 0.5, "y": 0.5, "font": {"color": MUTED, "size": 13}}])


def _time_range(xs: Sequence[float], *, pad_ms: float) -> list[float]:
    """From the first to the last point and ``pad_ms`` beyond each, so one point is not stretched to a fake span."""
    return [min(xs) - pad_ms, max(xs) + pad_ms]


def drift_figure(readings: list[dict], *, alarms: list[dict], feature_lines: int = DRIFT_FEATURE_LINES,
                 height: int = 320) -> dict:
    """PSI of the task's live inputs at every drift check: the largest PSI of each check (thick line), the
    features that reached the highest PSI (thin lines; a gap where a feature was not among a check's
    largest), the PSI threshold each check used (dashed) and the alarms (crosses).

    ``readings`` oldest first: {"at" (ms), "psi_max", "threshold", "rows", "drifted",
    "features": [{"feature", "psi", "p_value", "moved"}]}; ``alarms``: {"at", "psi_max", "rows", "features"}.
    """
    if not readings and not alarms:
        return empty_figure("No drift check has compared live inputs yet.", height=height)
    xs = [r["at"] for r in readings]
    peak: dict[str, float] = {}
    for reading in readings:
        for f in reading["features"]:
            peak[f["feature"]] = max(peak.get(f["feature"], 0.0), f["psi"])
    shown = sorted(peak, key=lambda name: -peak[name])[:feature_lines]
    data: list[dict] = []
    for i, name in enumerate(shown):
        by_name = [{f["feature"]: f["psi"] for f in r["features"]}.get(name) for r in readings]
        data.append({"type": "scatter", "mode": "lines", "name": name, "x": xs, "y": by_name, "connectgaps": False,
                     "line": {"color": PALETTE[(i + 1) % len(PALETTE)], "width": 1.2},
                     "hovertemplate": f"{name}: PSI %{{y:.4f}}<extra></extra>"})
    if readings:
        tops = [", ".join(f"{f['feature']} {f['psi']:.3f}{' (moved)' if f.get('moved') else ''}"
                          for f in r["features"][:3]) for r in readings]
        data.append({"type": "scatter", "mode": "lines+markers", "name": "largest PSI", "x": xs,
                     "y": [r["psi_max"] for r in readings], "customdata": [[r["rows"], t] for r, t in zip(
                         readings, tops, strict=True)],
                     "line": {"color": ACCENT, "width": 2.5}, "marker": {"size": 5},
                     "hovertemplate": "largest PSI %{y:.4f} over %{customdata[0]} rows<br>%{customdata[1]}"
                                      "<extra></extra>"})
        data.append({"type": "scatter", "mode": "lines", "name": "threshold", "x": xs,
                     "y": [r["threshold"] for r in readings], "line": {"color": BAD, "dash": "dash", "shape": "hv"},
                     "hovertemplate": "threshold %{y:.3f}<extra></extra>"})
    if alarms:
        data.append({"type": "scatter", "mode": "markers", "name": "alarm", "x": [a["at"] for a in alarms],
                     "y": [a["psi_max"] for a in alarms],
                     "customdata": [[a["rows"], ", ".join(a["features"])] for a in alarms],
                     "marker": {"color": BAD, "symbol": "x", "size": 12, "line": {"color": FG, "width": 1}},
                     "hovertemplate": "alarm: PSI %{y:.4f} over %{customdata[0]} rows<br>moved: %{customdata[1]}"
                                      "<extra></extra>"})
    every_x = xs + [a["at"] for a in alarms]
    pad = max(60_000.0, 0.03 * (max(every_x) - min(every_x)))
    return figure(data, height=height, xaxis={"type": "date", "range": _time_range(every_x, pad_ms=pad)},
                  yaxis={"title": {"text": "PSI"}, "rangemode": "tozero", "tickformat": ".2f"})


def live_score_figure(series: list[dict], *, classes: bool, bucket_s: float, height: int = 320) -> dict:
    """Live score from feedback over time, per implementation and version: accuracy (classes) or mean
    absolute error (values) in each time bucket, with its 95 % interval as a band (Wilson's for
    accuracy, mean ± 1.96 standard errors for the error; none for a one-report error bucket).

    ``series``: [{"label", "points": [{"at" (bucket start, ms), "n", "value", "low", "high"}]}].
    """
    if not any(s["points"] for s in series):
        return empty_figure("No feedback reported yet (POST /api/tasks/<slug>/feedback).", height=height)
    what = "accuracy" if classes else "mean absolute error"
    data: list[dict] = []
    for i, entry in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        points = entry["points"]
        xs = [p["at"] for p in points]
        data.append({"type": "scatter", "mode": "lines", "x": xs, "y": [p["high"] for p in points],
                     "line": {"width": 0, "color": color}, "showlegend": False, "hoverinfo": "skip",
                     "legendgroup": entry["label"], "name": f"{entry['label']} 95% high"})
        data.append({"type": "scatter", "mode": "lines", "x": xs, "y": [p["low"] for p in points],
                     "fill": "tonexty", "fillcolor": _rgba(color, 0.18), "line": {"width": 0, "color": color},
                     "showlegend": False, "hoverinfo": "skip", "legendgroup": entry["label"],
                     "name": f"{entry['label']} 95% low"})
        data.append({"type": "scatter", "mode": "lines+markers", "name": entry["label"], "x": xs,
                     "y": [p["value"] for p in points], "legendgroup": entry["label"],
                     "customdata": [[p["n"], p["low"], p["high"]] for p in points],
                     "line": {"color": color, "width": 2}, "marker": {"size": 6},
                     "hovertemplate": f"{entry['label']}: {what} %{{y:.4f}} "
                                      "[%{customdata[1]:.3f}, %{customdata[2]:.3f}]<br>%{customdata[0]} reports"
                                      "<extra></extra>"})
    every_x = [p["at"] for s in series for p in s["points"]]
    yaxis: dict[str, Any] = {"title": {"text": f"live {what}"}, "rangemode": "tozero"}
    if classes:
        yaxis.update(range=[0, 1.02], tickformat=".2f")
    return figure(data, height=height, xaxis={"type": "date", "range": _time_range(every_x, pad_ms=bucket_s * 500.0)},
                  yaxis=yaxis)
