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
    return figure(data, xaxis={"title": {"text": "version"}, "tickprefix": "v", "dtick": max(1, len(xs) // 12)},
                  yaxis={"title": {"text": "score"}, "tickformat": ".2f"},
                  yaxis2={"title": {"text": "p95 latency (ms)"}, "overlaying": "y", "side": "right",
                          "showgrid": False, "rangemode": "tozero", "automargin": True, "tickformat": ".3~f"})


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
        {"type": "scatter", "mode": "markers+text", "name": "versions",
         "x": [v["latency_p95_ms"] for v in rows], "y": [v["score"] for v in rows],
         "text": [f"v{v['number']}" for v in rows], "textposition": "top center",
         "textfont": {"color": MUTED, "size": 10},
         "customdata": [[v["n_parameters"] or 0, v["runtime"]] for v in rows],
         "marker": {"size": sizes, "color": colors, "opacity": 0.85, "line": {"color": FG, "width": 1}},
         "hovertemplate": "%{text}<br>score %{y:.4f}<br>p95 %{x:.3f} ms<br>%{customdata[0]} parameters"
                          "<br>%{customdata[1]}<extra></extra>"},
    ]
    return figure(data, xaxis={"type": "log", "title": {"text": "p95 latency, batch 1 (ms)"}},
                  yaxis={"title": {"text": "score"}})


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
                  yaxis2={"title": {"text": "p95 latency (ms)"}, "overlaying": "y", "side": "right", "type": "log",
                          "showgrid": False, "automargin": True})
