"""Reads behind the control panel's pages: each returns plain data a template renders as it is.

Pages ask the apps' own selectors first (``improvement_status``, ``system_health_report``,
``serving_comparison``, ...) and only shape the result for display and charts here.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import Min, Prefetch
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from hormones.choices import HORMONE_DEFAULTS
from hormones.models import BrainStateSnapshot, Hormone, HormoneEvent, decayed_level
from hormones.selectors import brain_state_latest
from improvement.choices import FINISHED, IN_FLIGHT, RunStatus
from improvement.health import system_health_report
from improvement.models import CycleRecord, ImprovementConfig, ImprovementRun, LoopState
from improvement.selectors import improvement_status, run_dict, runs_query
from models_registry.choices import Implementation
from models_registry.models import DatasetVersion, ModelVersion, NeuralModel, Task
from models_registry.serving.models import ServingState
from models_registry.serving.selectors import serving_comparison, serving_switch_list
from project.panel import charts, search_charts
from project.panel.selectors_downloads import version_downloads
from project.panel.selectors_serving import serving_control
from project.panel.selectors_trigger import decisions_with_triggers, run_trigger

HORMONE_GRID = 300
HORMONE_EVENTS_MAX = 5000
HORMONE_WINDOWS_H = (1, 6, 24, 168)
HORMONE_DEFAULT_MAX_H = 24


# ------------------------------------------------------------------------------ shared bits


def loop_summary() -> dict:
    """The loop's state for the header strip and the countdown."""
    state, config = LoopState.load(), ImprovementConfig.load()
    next_at = state.next_cycle_at if state.running and config.enabled else None
    return {
        "running": state.running, "enabled": config.enabled, "cycles": state.cycles,
        "last_cycle_at": state.last_cycle_at, "next_cycle_at": next_at,
        "next_cycle_ms": charts.ms(next_at) if next_at else None,
        "next_cycle_in_s": max(0, round((next_at - timezone.now()).total_seconds())) if next_at else None,
        "interval_s": config.improvement_interval,
        "max_concurrent": config.max_concurrent_improvements,
    }


def _switch_dict(switch) -> dict:
    return {
        "id": switch.pk, "task": switch.task.slug, "task_id": switch.task_id, "at": switch.created_at,
        "from": switch.from_implementation or "—", "to": switch.to_implementation,
        "to_version": switch.to_version.number if switch.to_version_id else None,
        "reason": switch.get_reason_display(), "reason_code": switch.reason, "detail": switch.detail,
        "actor": switch.actor,
    }


def switches_recent(*, limit: int = 10, task: Task | None = None) -> list[dict]:
    return [_switch_dict(s) for s in serving_switch_list(task=task)[:limit]]


def promotions_recent(*, limit: int = 10) -> list[dict]:
    runs = (ImprovementRun.objects.filter(status=RunStatus.PROMOTED).select_related("model__task", "result_version")
            .order_by("-finished_at", "-id")[:limit])
    return [{
        "run_id": r.pk, "model": str(r.model), "model_id": r.model_id, "strategy": r.strategy, "gain": r.gain,
        "version": r.result_version.number if r.result_version_id and r.result_version is not None else None,
        "at": r.finished_at,
        "baseline_score": (r.baseline_metrics or {}).get("score"), "score": (r.candidate_metrics or {}).get("score"),
    } for r in runs]


# ------------------------------------------------------------------------------ hormones


def hormone_params() -> dict[str, dict]:
    """Baseline, half-life and the last known (level, time) of each hormone, for live decay in the page."""
    now = timezone.now()
    params = {name: {"baseline": spec[0], "half_life_s": spec[1], "level": spec[0], "at": charts.ms(now)}
              for name, spec in HORMONE_DEFAULTS.items()}
    for hormone in Hormone.objects.all():
        params[hormone.name] = {"baseline": hormone.baseline, "half_life_s": hormone.half_life_s,
                                "level": hormone.level, "at": charts.ms(hormone.updated_at)}
    return params


def hormone_events(*, since: datetime, until: datetime | None = None, name: str | None = None,
                   limit: int = HORMONE_EVENTS_MAX) -> list[dict]:
    """Events in the window, oldest first (the newest ``limit`` of them)."""
    qs = HormoneEvent.objects.filter(created_at__gte=since)
    if until is not None:
        qs = qs.filter(created_at__lte=until)
    if name:
        qs = qs.filter(hormone__name=name)
    rows = qs.order_by("-created_at", "-id").values(
        "id", "hormone__name", "created_at", "delta", "level_before", "level_after", "cause")[:limit]
    return [{"id": r["id"], "name": r["hormone__name"], "created_at": r["created_at"], "at": charts.ms(r["created_at"]),
             "delta": r["delta"], "level_before": r["level_before"], "level_after": r["level_after"],
             "cause": r["cause"]} for r in reversed(list(rows))]


def hormone_first_record() -> datetime | None:
    """When hormones were first recorded: the earliest event, brain-state snapshot or hormone row."""
    firsts = [HormoneEvent.objects.aggregate(first=Min("created_at"))["first"],
              BrainStateSnapshot.objects.aggregate(first=Min("created_at"))["first"],
              Hormone.objects.aggregate(first=Min("updated_at"))["first"]]
    return min((first for first in firsts if first is not None), default=None)


def hormone_default_hours(*, now: datetime | None = None) -> int:
    """The hormones page's default window: the shortest that holds the whole record, at most 24 h."""
    first = hormone_first_record()
    if first is None:
        return HORMONE_WINDOWS_H[0]
    age_h = ((now or timezone.now()) - first).total_seconds() / 3600.0
    fitting = [h for h in HORMONE_WINDOWS_H if h <= HORMONE_DEFAULT_MAX_H and h >= age_h]
    return fitting[0] if fitting else HORMONE_DEFAULT_MAX_H


def hormone_series(*, since: datetime, until: datetime, events: list[dict] | None = None,
                   grid: int = HORMONE_GRID) -> dict[str, list[tuple[int, float]]]:
    """Each hormone's level over [since, until]: exact jumps at its events, decay sampled between.

    Levels decay in closed form (``decayed_level``), so the series is rebuilt from the events
    and each hormone's baseline and half-life rather than stored. The lines start at the first
    record (``hormone_first_record``) when that is inside the window: nothing is drawn for a
    time before the system recorded anything.
    """
    hormones = {h.name: h for h in Hormone.objects.all()}
    events = hormone_events(since=since, until=until) if events is None else events
    first = hormone_first_record()
    if first is not None and first > since:
        since = min(first, until)
    step = max(1.0, (until - since).total_seconds() / grid)
    grid_times = [t for t in (since + timedelta(seconds=step * i) for i in range(grid)) if t < until] + [until]
    series: dict[str, list[tuple[int, float]]] = {}
    for name, spec in HORMONE_DEFAULTS.items():
        hormone = hormones.get(name)
        baseline, half_life = (hormone.baseline, hormone.half_life_s) if hormone else (spec[0], spec[1])
        own = [e for e in events if e["name"] == name]
        anchor_t, anchor_level = _hormone_anchor(hormone, since, own, baseline)
        points: list[tuple[int, float]] = []
        timeline = sorted([(t, None) for t in grid_times] + [(e["created_at"], e) for e in own],
                          key=lambda item: (item[0], item[1] is not None))
        for when, event in timeline:
            if event is None:
                level = decayed_level(level=anchor_level, baseline=baseline, half_life_s=half_life,
                                      elapsed_s=(when - anchor_t).total_seconds())
                points.append((charts.ms(when), round(level, 5)))
            else:
                points.append((event["at"], round(event["level_before"], 5)))
                points.append((event["at"], round(event["level_after"], 5)))
                anchor_t, anchor_level = when, event["level_after"]
        series[name] = points
    return series


def _hormone_anchor(hormone: Hormone | None, since: datetime, own: list[dict], baseline: float):
    """The (time, level) the series starts from: the last event before the window, else the row."""
    if hormone is None:
        return since, baseline
    previous = (HormoneEvent.objects.filter(hormone=hormone, created_at__lt=since)
                .order_by("-created_at", "-id").values_list("created_at", "level_after").first())
    if previous is not None:
        return previous
    if own:
        # No event before the window: the hormone sat at the first event's starting level.
        return since, own[0]["level_before"]
    return hormone.updated_at, hormone.level


def hormones_page(*, hours: int, name: str | None) -> dict:
    now = timezone.now()
    since = now - timedelta(hours=hours)
    events = hormone_events(since=since, until=now)
    series = hormone_series(since=since, until=now, events=events)
    shown = [e for e in events if not name or e["name"] == name]
    current = []
    params = hormone_params()
    for hormone_name, p in params.items():
        hormone = Hormone.objects.filter(name=hormone_name).first()
        current.append({"name": hormone_name, "level": hormone.level_at(now) if hormone else p["baseline"],
                        "baseline": p["baseline"], "half_life_s": p["half_life_s"],
                        "events": sum(1 for e in events if e["name"] == hormone_name)})
    return {
        "figure": charts.hormone_levels_figure(series, events=events, height=380),
        "params": params, "current": current, "events": list(reversed(shown))[:200],
        "n_events": len(shown), "hours": hours, "windows": HORMONE_WINDOWS_H, "name": name,
        "names": list(HORMONE_DEFAULTS),
    }


# ------------------------------------------------------------------------------ overview


def models_table() -> list[dict]:
    active = {v.model_id: v for v in ModelVersion.objects.filter(is_active=True)}
    serving = {s.task_id: s for s in ServingState.objects.select_related("version")}
    rows = []
    for model in NeuralModel.objects.select_related("task").order_by("task__slug", "name"):
        version = active.get(model.pk)
        state = serving.get(model.task_id)
        rows.append({
            "model": model, "task": model.task, "version": version,
            "serving": state.implementation if state else None,
            "serving_this": bool(state and version and state.version_id == version.pk),
        })
    return rows


def _brain() -> dict | None:
    brain = brain_state_latest()
    if brain is not None:
        brain["taken"] = parse_datetime(brain["created_at"])
    return brain


def overview_page() -> dict:
    status = improvement_status()
    report = system_health_report()
    now = timezone.now()
    since = now - timedelta(hours=1)
    series = hormone_series(since=since, until=now, grid=120)
    in_flight = status["running"] + status["queued"]
    health = {m["model_id"]: m for m in report["models"]}
    models = [{**row, "health": health.get(row["model"].pk, {})} for row in models_table()]
    return {
        "fleet": report["fleet"], "models": models, "in_flight": in_flight, "counts": status["counts"],
        "last_cycle": status["last_cycle"], "loop": loop_summary(),
        "brain": _brain(), "hormone_figure": charts.hormone_levels_figure(series, height=260),
        "hormone_params": hormone_params(), "promotions": promotions_recent(limit=8),
        "switches": switches_recent(limit=8),
        "finished": [run_dict(r) for r in runs_query().filter(status__in=FINISHED)[:8]],
    }


# ------------------------------------------------------------------------------ tasks


def _side(held: dict | None, live: dict | None) -> dict:
    held = held or {}
    return {"score": held.get("score"), "metric": held.get("metric"), "p50_ms": held.get("latency_p50_ms"),
            "p95_ms": held.get("latency_p95_ms"), "version": held.get("version"),
            "live_requests": (live or {}).get("n_requests"), "live_p95_ms": (live or {}).get("latency_p95_ms"),
            "live_error_rate": (live or {}).get("error_rate")}


def _live_point(feedback: dict, implementation: str, version_id: int | None) -> dict | None:
    """The live score of one implementation (and version) from ``feedback_live``, for the chart."""
    for entry in feedback["live"]:
        if entry["implementation"] == implementation and entry["version_id"] == version_id:
            low, high = entry["score_ci95"]
            return {"score": entry["score"], "low": low, "high": high, "n": entry["n"]}
    return None


def tasks_page() -> dict:
    rows = []
    states = {s.task_id: s for s in ServingState.objects.select_related("version__model")}
    datasets = Prefetch("dataset_versions", queryset=DatasetVersion.objects.select_related("created_by", "parent"))
    for task in Task.objects.prefetch_related("neural_models", datasets).order_by("slug"):
        comparison = serving_comparison(task=task)
        state = states.get(task.pk)
        neural = _side(comparison["held_out"]["neural"], comparison["live"]["neural"])
        algorithmic = _side(comparison["held_out"]["algorithmic"], comparison["live"]["algorithmic"])
        rows.append({
            "task": task, "state": state, "models": list(task.neural_models.all()),
            "implementation": state.implementation if state else "—",
            "reason": state.get_reason_display() if state else "no serving decision yet",
            "detail": state.detail if state else "", "since": state.since if state else None,
            "pinned": bool(state and state.pinned),
            "served_version": state.version if state and state.version_id else None,
            "neural": neural, "algorithmic": algorithmic, "floor": comparison["floor"],
            "budget_ms": comparison["latency_budget_ms"], "shadow": comparison["shadow"],
            "switches": switches_recent(limit=5, task=task),
            "datasets": list(task.dataset_versions.all()),  # newest first
            "feedback": comparison["feedback"],
            "neural_version_id": (comparison["held_out"]["neural"] or {}).get("version_id"),
            "serving_control": serving_control(task=task, state=state),
        })
    figure = charts.serving_comparison_figure([
        {"task": r["task"].slug, "neural_score": r["neural"]["score"], "algorithmic_score": r["algorithmic"]["score"],
         "neural_p95_ms": r["neural"]["p95_ms"], "algorithmic_p95_ms": r["algorithmic"]["p95_ms"],
         "neural_live": _live_point(r["feedback"], Implementation.NEURAL, r["neural_version_id"]),
         "algorithmic_live": _live_point(r["feedback"], Implementation.ALGORITHMIC, None)} for r in rows
    ])
    return {"rows": rows, "figure": figure}


# ------------------------------------------------------------------------------ model


def version_rows(model: NeuralModel) -> list[dict]:
    """Every version of ``model`` with its lineage depth, in lineage (depth-first) order."""
    versions = list(model.versions.order_by("number"))
    produced = dict(ImprovementRun.objects.filter(result_version__in=versions)
                    .values_list("result_version_id", "id"))
    by_id = {v.pk: v for v in versions}
    children: dict[int | None, list[ModelVersion]] = {}
    for v in versions:
        parent = v.parent_id if v.parent_id in by_id else None
        children.setdefault(parent, []).append(v)
    ordered: list[tuple[ModelVersion, int]] = []
    stack = [(v, 0) for v in reversed(children.get(None, []))]
    while stack:
        version, depth = stack.pop()
        ordered.append((version, depth))
        stack.extend((c, depth + 1) for c in reversed(children.get(version.pk, [])))
    return [{
        "id": v.pk, "number": v.number, "at": charts.ms(v.created_at), "created_at": v.created_at,
        "score": v.score, "score_split": v.score_split, "test_score": v.test_score,
        "test_ci95": (v.test_ci95_low, v.test_ci95_high) if v.test_ci95_low is not None else None,
        "metric": v.metric, "latency_p50_ms": v.latency_p50_ms, "latency_p95_ms": v.latency_p95_ms,
        "n_parameters": v.n_parameters, "size_bytes": v.size_bytes, "runtime": v.runtime,
        "runtime_label": v.get_runtime_display(), "is_active": v.is_active, "note": v.note,
        "parent_number": by_id[v.parent_id].number if v.parent_id in by_id else None,
        "run_id": produced.get(v.pk), "depth": depth, "indent": min(depth, 24), **version_downloads(v),
    } for v, depth in ordered]


def model_page(model: NeuralModel) -> dict:
    versions = version_rows(model)
    chronological = sorted(versions, key=lambda v: v["number"])
    active = next((v for v in versions if v["is_active"]), None)
    previous = None
    if active is not None:
        parent = next((v for v in versions if v["number"] == active["parent_number"]), None)
        earlier = [v for v in chronological if v["number"] < active["number"]]
        previous = parent or (earlier[-1] if earlier else None)
    runs = [{**run_dict(r), "created": r.created_at} for r in runs_query(model_id=model.pk)[:20]]
    return {
        "model": model, "versions": versions, "active": active, "rollback_to": previous,
        "history_figure": charts.version_history_figure(chronological),
        "pareto_figure": charts.pareto_figure(versions), "runs": runs,
        "in_flight": [r for r in runs if r["status"] in IN_FLIGHT],
    }


# ------------------------------------------------------------------------------ run


HIGHER, LOWER, NEUTRAL = "higher", "lower", ""  # which way a metric gets better (colours its change)
METRIC_ROWS = [
    ("score", "score", "{:.4f}", HIGHER), ("latency.p50_ms_b1", "p50 latency, batch 1 (ms)", "{:.3f}", LOWER),
    ("latency.p95_ms_b1", "p95 latency, batch 1 (ms)", "{:.3f}", LOWER),
    ("latency.p50_ms_b256", "p50 latency, batch 256 (ms)", "{:.3f}", LOWER),
    ("latency.p95_ms_b256", "p95 latency, batch 256 (ms)", "{:.3f}", LOWER),
    ("n_parameters", "parameters", "{:,}", LOWER), ("size_bytes", "size (bytes)", "{:,}", LOWER),
    ("n_test", "test rows", "{}", NEUTRAL),
]


def relative_change(before, after) -> float | None:
    """(after − before) / |before| as a fraction (the panel writes it with ``signed_pct``)."""
    if isinstance(before, int | float) and isinstance(after, int | float) and before:
        return (after - before) / abs(before)
    return None


def _metric(metrics: dict, path: str):
    value: Any = metrics or {}
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _fmt(value, pattern: str) -> str:
    if value is None:
        return "—"
    try:
        return pattern.format(value)
    except (TypeError, ValueError):
        return str(value)


def run_page(run: ImprovementRun) -> dict:
    data = run_dict(run, full=True)
    metrics = []
    for path, label, pattern, better in METRIC_ROWS:
        before, after = _metric(run.baseline_metrics, path), _metric(run.candidate_metrics, path)
        metrics.append({"label": label, "before": _fmt(before, pattern), "after": _fmt(after, pattern),
                        "change": relative_change(before, after), "better": better})
    # A run judged on the rows its baseline was trained with and those added since (rehearsal_judge).
    rehearsal = _metric(run.candidate_metrics, "gate_test.rehearsal") or {}
    for part, label in (("old", "score, old gate rows"), ("new", "score, new gate rows")):
        if isinstance(rehearsal.get(part), dict):
            before, after = rehearsal[part].get("baseline_score"), rehearsal[part].get("candidate_score")
            metrics.append({"label": f"{label} (n={rehearsal[part].get('n')})", "before": _fmt(before, "{:.4f}"),
                            "after": _fmt(after, "{:.4f}"), "change": relative_change(before, after),
                            "better": HIGHER})
    config = ImprovementConfig.load()
    return {
        "run": run, "data": data, "metrics": metrics, "in_flight": run.status in IN_FLIGHT,
        "curve_figure": charts.run_curve_figure(run.curve or []), "curve_len": len(run.curve or []),
        "last_point_t": (run.curve[-1].get("t") or 0) if run.curve else 0,
        "threshold": config.performance_threshold, "tolerance": config.optimization_score_tolerance,
        "alpha": config.promotion_alpha,
        "note": (run.candidate_metrics or {}).get("note", ""),
        "trigger": run_trigger(run),
        "search": search_charts.run_search_views(run=run),
    }


# ------------------------------------------------------------------------------ configuration


def config_page() -> dict:
    last = CycleRecord.objects.order_by("-started_at", "-id").first()
    return {
        "loop": loop_summary(), "last_cycle": last,
        "decisions": decisions_with_triggers((last.decisions if last else [])[:30]),
        "in_flight": ImprovementRun.objects.filter(status__in=IN_FLIGHT).count(),
    }
