"""An architecture run's search, drawn: trials over time, the Pareto front, parallel coordinates, importance.

A search records each trial as a ``SearchCandidate`` row: its genome, its training settings and,
once trained, its validation score, latency and size. These views rebuild an in-memory Optuna
study from those rows — a trial's parameters are its genome's fields (flattened) and its training
settings, each distribution spanning the values the run tried — and draw it with Optuna's own
plotting functions. They make Plotly figures of scatter and bar traces only, which the panel's
vendored plotly-basic bundle draws; they are restyled here for the panel's dark theme, with hover
text instead of point labels. Failed trials are counted and left out of the charts (as Optuna
leaves them out); trials still waiting or training are counted, not drawn.

The figures are cached per run and per state of its trials, so the page's live refreshes during
a search do not recompute the parameter importance each time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from django.core.cache import cache
from optuna import visualization
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.importance import FanovaImportanceEvaluator
from optuna.trial import TrialState

from improvement.choices import IN_FLIGHT
from improvement.models import ImprovementRun, SearchCandidate
from improvement.strategies.registry import NEED_SHARED_SEARCH, get_strategy
from project.panel import charts

#: Parameters searched on a log scale (``improvement.nn.search_space``).
LOG_PARAMS = frozenset({"lr", "weight_decay"})
#: Genome fields fixed by the task's contract, not searched.
CONTRACT_FIELDS = frozenset({"input_shape", "output_dim", "code_dim"})
#: Finished trials needed before a parameter importance means anything.
MIN_TRIALS_IMPORTANCE = 2
#: Parameter axes of the parallel coordinates at most (the most important first): more are unreadable.
PARALLEL_AXES = 8
SEARCH_CACHE_S = 3600
TRIAL_TABLE_ROWS = 10

optuna.logging.set_verbosity(optuna.logging.WARNING)  # as improvement.nn.trials: no line per in-memory study

FINISHED = (SearchCandidate.Status.DONE, SearchCandidate.Status.FAILED)
LOW_COLOR = (0x3B, 0x46, 0x54)  # parallel coordinates: the worst score's line ...
HIGH_COLOR = (0x4F, 0xB3, 0xFF)  # ... and the best's (charts.ACCENT)


@dataclasses.dataclass(frozen=True)
class SearchTrial:
    """One trial of a search, as the charts need it (a ``SearchCandidate`` row, read once)."""

    index: int
    status: str  # a SearchCandidate.Status value
    score: float | None
    latency_ms: float | None
    n_parameters: int | None
    params: dict[str, Any]
    error: str = ""

    @property
    def completed(self) -> bool:
        """Trained and scored: drawn. A done trial without a score counts as failed."""
        return self.status == SearchCandidate.Status.DONE and _finite(self.score)

    @property
    def failed(self) -> bool:
        return self.status in FINISHED and not self.completed


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


# ------------------------------------------------------------------------------ trials


def genome_fields(genome: dict) -> dict[str, Any]:
    """A genome as flat parameters: ``family`` (its kind), scalar fields as they are, numeric lists
    as ``<field>.n`` (how many) and ``<field>.max`` (the largest); contract fields left out."""
    fields: dict[str, Any] = {"family": genome.get("kind")}
    for key, value in sorted(genome.items()):
        if key == "kind" or key in CONTRACT_FIELDS:
            continue
        if isinstance(value, bool | str | int | float):
            fields[key] = value
        elif isinstance(value, list) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            fields[f"{key}.n"] = len(value)
            if value:
                fields[f"{key}.max"] = max(value)
    return fields


def trial_of(candidate: SearchCandidate) -> SearchTrial:
    params = {**genome_fields(candidate.genome or {}),
              **{k: v for k, v in (candidate.train_params or {}).items() if isinstance(v, bool | str | int | float)}}
    return SearchTrial(index=candidate.index, status=candidate.status, score=candidate.score,
                       latency_ms=candidate.latency_ms, n_parameters=candidate.n_parameters, params=params,
                       error=candidate.error)


def _distribution(name: str, values: list[Any]) -> BaseDistribution | None:
    """A distribution spanning ``values``; None when they are all the same (nothing to learn from)."""
    distinct = list(dict.fromkeys(values))
    if len(distinct) < 2:
        return None
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in distinct)
    if numeric and all(isinstance(v, int) for v in distinct):
        return IntDistribution(int(min(distinct)), int(max(distinct)))
    if numeric:
        low, high = float(min(distinct)), float(max(distinct))
        return FloatDistribution(low, high, log=name in LOG_PARAMS and low > 0)
    return CategoricalDistribution(sorted(distinct, key=lambda v: (type(v).__name__, str(v))))


def distributions_of(trials: Sequence[SearchTrial]) -> dict[str, BaseDistribution]:
    """One distribution per parameter that varies across the finished trials."""
    values: dict[str, list[Any]] = {}
    for trial in trials:
        if trial.status in FINISHED:
            for name, value in trial.params.items():
                values.setdefault(name, []).append(value)
    found = {name: _distribution(name, seen) for name, seen in sorted(values.items())}
    return {name: dist for name, dist in found.items() if dist is not None}


def _internal(dist: BaseDistribution, value: Any) -> Any:
    return float(value) if isinstance(dist, FloatDistribution) else value


def search_study(trials: Sequence[SearchTrial], *, objectives: Sequence[str] = ("score",)) -> optuna.Study:
    """An in-memory study of the finished trials, in the order the search made them.

    ``objectives`` are SearchTrial fields: ``score`` is maximised, ``latency_ms`` and
    ``n_parameters`` minimised. A trial missing one of them is told as failed. Each trial keeps its
    candidate's ``index`` as a user attribute.
    """
    dists = distributions_of(trials)
    study = optuna.create_study(directions=["maximize" if o == "score" else "minimize" for o in objectives])
    for trial in sorted(trials, key=lambda t: t.index):
        if trial.status not in FINISHED:
            continue
        values = [getattr(trial, o) for o in objectives]
        ok = trial.completed and all(_finite(v) for v in values)
        params = {name: _internal(dists[name], value) for name, value in trial.params.items() if name in dists}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={name: dists[name] for name in params},
            values=[float(v) for v in values] if ok else None,
            state=TrialState.COMPLETE if ok else TrialState.FAIL, user_attrs={"index": trial.index},
        ))
    return study


def pareto_axis(trials: Sequence[SearchTrial]) -> str | None:
    """What the front weighs the score against: latency when every scored trial has one, else size."""
    done = [t for t in trials if t.completed]
    if not done:
        return None
    for field in ("latency_ms", "n_parameters"):
        if all(_finite(getattr(t, field)) and getattr(t, field) > 0 for t in done):
            return field
    return None


def pareto_front_indices(trials: Sequence[SearchTrial], *, axis: str = "latency_ms") -> list[int]:
    """Candidate indices of the trials no other beats on both a higher score and a lower ``axis``."""
    study = search_study(trials, objectives=(axis, "score"))
    return sorted(t.user_attrs["index"] for t in study.best_trials)


# ------------------------------------------------------------------------------ figures


def _plain(value: Any) -> Any:
    """A figure's JSON as plain lists and numbers (numpy arrays and scalars unpacked, NaN as null)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _themed(fig: Any, **overrides) -> dict:
    """An Optuna figure with the panel's dark layout: Plotly's template, the title and the white
    backgrounds dropped, Optuna's axes kept under ``overrides``."""
    raw = _plain(fig.to_plotly_json())
    kept = {k: v for k, v in raw.get("layout", {}).items()
            if k not in ("template", "title", "plot_bgcolor", "paper_bgcolor", "legend")}
    for key, value in overrides.items():
        kept[key] = {**kept[key], **value} if isinstance(value, dict) and isinstance(kept.get(key), dict) else value
    return {"data": raw.get("data", []), "layout": charts.layout(**kept)}


def _trial_label(trial: optuna.trial.FrozenTrial) -> str:
    params = trial.params
    family = params.get("family")
    return f"trial {trial.user_attrs.get('index', trial.number)}" + (f" · {family}" if family else "")


def history_figure(study: optuna.Study) -> dict:
    """Validation score per trial (in the search's order) and the best so far (Optuna's history plot)."""
    fig = _themed(visualization.plot_optimization_history(study, target_name="validation score"),
                  height=320, xaxis={"title": {"text": "trial (order of the search)"}},
                  yaxis={"title": {"text": "validation score"}, "tickformat": ".3f"})
    by_number = {t.number: t for t in study.trials}

    def index(number: Any) -> Any:
        trial = by_number.get(number)
        return trial.user_attrs.get("index", number) if trial is not None else number

    data = []
    for trace in fig["data"]:
        if not trace.get("x"):
            continue  # "Infeasible Trial": this study has no constraints
        numbers = list(trace["x"])
        trace = {**trace, "x": [index(n) for n in numbers]}
        if trace.get("mode") == "markers":
            trace.update(name="validation score", marker={"color": charts.ACCENT, "size": 8},
                         text=[_trial_label(by_number[n]) for n in numbers if n in by_number],
                         hovertemplate="%{text}<br>score %{y:.4f}<extra></extra>")
        else:
            trace.update(name="best so far", line={"color": charts.OK, "shape": "hv", "width": 2},
                         hovertemplate="best so far %{y:.4f}<extra></extra>")
        data.append(trace)
    fig["data"] = data
    return fig


def _pareto_hover(text: str, axis_label: str) -> str:
    """Optuna's hover text (a trial as indented JSON) cut to what a reader wants."""
    try:
        trial = json.loads(text.replace("<br>", "\n"))
        x, score = trial["values"]
        params = trial.get("params", {})
    except (ValueError, KeyError, TypeError):
        return text
    family = f" · {params['family']}" if "family" in params else ""
    return (f"trial {trial.get('user_attrs', {}).get('index', trial.get('number'))}{family}"
            f"<br>score {score:.4f}<br>{axis_label} {x:.4g}")


def pareto_figure(study: optuna.Study, *, axis: str) -> dict:
    """Score against latency (or size), the front highlighted and joined; hover text, no labels."""
    label = "p50 latency, batch 1 (ms)" if axis == "latency_ms" else "parameters"
    xs = [t.values[0] for t in study.trials if t.state == TrialState.COMPLETE]
    fig = _themed(visualization.plot_pareto_front(study, target_names=[label, "validation score"]),
                  height=340, xaxis=charts.log_axis(xs, title={"text": label}),
                  yaxis={"title": {"text": "validation score"}, "tickformat": ".3f"})
    data = []
    for trace in fig["data"]:
        if not trace.get("x"):
            continue
        front = "Best" in str(trace.get("hovertemplate", ""))
        data.append({
            "type": "scatter", "mode": "markers", "name": "Pareto front" if front else "dominated trials",
            "x": trace["x"], "y": trace["y"],
            "text": [_pareto_hover(t, label) for t in trace.get("text") or []],
            "hovertemplate": "%{text}<extra></extra>",
            "marker": {"color": charts.OK if front else charts.MUTED, "size": 11 if front else 8,
                       "opacity": 0.95 if front else 0.7, "line": {"color": charts.FG, "width": 1 if front else 0}},
        })
    best = sorted((t.values[0], t.values[1]) for t in study.best_trials)
    if best:
        data.insert(0, {"type": "scatter", "mode": "lines", "name": "front", "showlegend": False,
                        "x": [p[0] for p in best], "y": [p[1] for p in best], "hoverinfo": "skip",
                        "line": {"color": charts.OK, "dash": "dash", "shape": "hv", "width": 1}})
    fig["data"] = data
    return fig


def _mix(share: float) -> str:
    share = min(1.0, max(0.0, share))
    r, g, b = (round(lo + (hi - lo) * share) for lo, hi in zip(LOW_COLOR, HIGH_COLOR, strict=True))
    return f"rgb({r},{g},{b})"


def parallel_figure(study: optuna.Study, *, params: Sequence[str] | None = None) -> dict:
    """``params`` (default: every one) and the score on parallel axes, one line per trial (Optuna's plot,
    drawn with scatter traces); lines coloured from dim (worst score) to bright (best)."""
    fig = _themed(visualization.plot_parallel_coordinate(study, params=list(params) if params else None,
                                                         target_name="score"),
                  height=380, margin={"l": 60, "r": 30, "t": 30, "b": 70})
    layout = fig["layout"]
    layout["annotations"] = [{**a, "font": {"color": charts.MUTED, "size": 10}} for a in layout.get("annotations", [])]
    layout["shapes"] = [{**s, "line": {"color": charts.GRID, "width": 1}} for s in layout.get("shapes", [])]
    layout["xaxis"] = {**layout.get("xaxis", {}), "tickangle": -30}
    for trace in fig["data"]:
        if trace.get("mode") == "lines" and trace.get("y"):
            # The first axis is the score, scaled to [0, 1]: it says where the line's colour sits.
            share = trace["y"][0] if isinstance(trace["y"][0], int | float) else 0.0
            trace["line"] = {**trace.get("line", {}), "color": _mix(share), "width": 1.5}
            trace["opacity"] = 0.8
        elif isinstance(trace.get("marker"), dict) and "colorscale" in trace["marker"]:
            trace["marker"] = {**trace["marker"], "colorscale": [[0.0, _mix(0.0)], [1.0, _mix(1.0)]],
                               "colorbar": {"title": {"text": "score"}, "outlinewidth": 0}}
    return fig


def ranked_params(importance: dict | None) -> list[str]:
    """The parameters of an importance figure, most important first."""
    if importance is None:
        return []
    bars = importance["data"][0]
    return [name for _, name in sorted(zip(bars["x"], bars["y"], strict=True), key=lambda pair: -pair[0])]


def importance_figure(study: optuna.Study) -> dict | None:
    """fANOVA importance of the parameters every scored trial shares (Optuna's plot); None when none."""
    fig = _themed(visualization.plot_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0)),
                  xaxis={"title": {"text": "importance for the validation score (fANOVA)"}, "rangemode": "tozero"},
                  yaxis={"title": {"text": ""}})
    bars = [t for t in fig["data"] if t.get("type") == "bar" and t.get("y")]
    if not bars:
        return None
    for trace in bars:
        trace.update(marker={"color": charts.ACCENT}, textfont={"color": charts.MUTED},
                     hovertemplate="%{y}: %{x:.3f}<extra></extra>")
    fig["data"] = bars
    fig["layout"]["height"] = 90 + 24 * max(len(t["y"]) for t in bars)
    return fig


# ------------------------------------------------------------------------------ views


def search_views(trials: Sequence[SearchTrial]) -> dict:
    """The four figures (None where there is not enough to draw), counts, and a short table."""
    done = [t for t in trials if t.completed]
    failed = [t for t in trials if t.failed]
    waiting = [t for t in trials if t.status not in FINISHED]
    views: dict[str, Any] = {
        "n_trials": len(trials), "n_done": len(done), "n_failed": len(failed), "n_waiting": len(waiting),
        "history": None, "pareto": None, "pareto_axis": None, "parallel": None, "importance": None,
        "importance_note": "", "front": [], "parallel_axes": (0, 0), "best": sorted(done, key=lambda t: (-(t.score or 0.0), t.index))[:TRIAL_TABLE_ROWS],
    }
    if not done:
        return views
    study = search_study(trials)
    views["history"] = history_figure(study)
    axis = pareto_axis(trials)
    if axis is not None:
        views["pareto_axis"] = "latency" if axis == "latency_ms" else "parameters"
        views["pareto"] = pareto_figure(search_study(trials, objectives=(axis, "score")), axis=axis)
        views["front"] = pareto_front_indices(trials, axis=axis)
    if len(done) < MIN_TRIALS_IMPORTANCE:
        views["importance_note"] = (f"Parameter importance needs at least {MIN_TRIALS_IMPORTANCE} scored trials; "
                                    f"this search has {len(done)}.")
    else:
        try:
            views["importance"] = importance_figure(study)
        except RuntimeError:  # fANOVA: "zero total variance", every scored trial has the same score
            views["importance_note"] = "Every scored trial has the same score: no parameter explains a difference."
        else:
            if views["importance"] is None:
                views["importance_note"] = "No parameter varies across every scored trial: nothing to rank."
    # The most important parameters first, then the others (conditional ones: not in every trial).
    ranked = ranked_params(views["importance"])
    axes = ranked + [name for name in distributions_of(trials) if name not in ranked]
    if axes:
        views["parallel"] = parallel_figure(study, params=axes[:PARALLEL_AXES])
        views["parallel_axes"] = (min(len(axes), PARALLEL_AXES), len(axes))
    return views


def is_search_run(run: ImprovementRun) -> bool:
    """Whether the run's strategy searches (its trials are SearchCandidate rows)."""
    try:
        return NEED_SHARED_SEARCH in get_strategy(run.strategy).needs
    except KeyError:
        return False


def run_search_views(*, run: ImprovementRun) -> dict | None:
    """The search views of a run that has trials, or of a search run in flight still waiting for them;
    None otherwise (a search that recorded no trials but a training curve shows the curve).

    Cached per run and per state of its trials (which ones exist, their status and results).
    """
    rows = list(run.search_candidates.order_by("index"))
    if not rows and not (is_search_run(run) and run.status in IN_FLIGHT and not run.curve):
        return None
    state = [(r.pk, r.status, r.score, r.latency_ms, r.n_parameters) for r in rows]
    key = f"panel:search:{run.pk}:{hashlib.sha256(repr(state).encode()).hexdigest()[:24]}"
    views = cache.get(key)
    if views is None:
        views = search_views([trial_of(r) for r in rows])
        cache.set(key, views, SEARCH_CACHE_S)
    return views
